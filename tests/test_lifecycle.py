"""A pod's whole life without training: stopping between and during stages (SIGTERM, exit 75, no
marker for an unfinished stage), a training step interrupted only before its update, checkpoints on
time, out-of-memory errors named by where they happened, an unchanged adapter stopped before merge.
The real training run of these paths is in test_lifecycle_run.py."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from grpo_job import errors, pipeline
from grpo_job.context import marker_key, open_run
from grpo_job.settings import load_settings
from grpo_job.stages import Stage
from grpo_job.stages import stages as all_stages

ROOT = Path(__file__).resolve().parents[1]


def settings_for(tmp_path, *extra):
    return load_settings(overrides=[f"--store.uri={tmp_path / 'runs'}", "--run_id=life", f"--work_dir={tmp_path / 'w'}",
                                    "--data.path=builtin:arithmetic", *extra])


def run_script(tmp_path, body: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`body` in a fresh interpreter after the run's stop control is installed (as `cli` does);
    `Stage`, `settings` and `pipeline` are in scope; it prints the exit code it would return."""
    code = textwrap.dedent(f"""
        import os, signal, sys, time
        from grpo_job import errors, pipeline, stopping
        from grpo_job.settings import load_settings
        from grpo_job.stages import Stage
        settings = load_settings(overrides=["--store.uri={tmp_path / 'runs'}", "--run_id=life",
                                            "--work_dir={tmp_path / 'w'}", "--data.path=builtin:arithmetic",
                                            "--stop.grace_seconds=1"])
        stop = stopping.install_for_run(settings.stop)
        def sigterm():
            os.kill(os.getpid(), signal.SIGTERM)
        try:
    """) + textwrap.indent(textwrap.dedent(body), "    ") + textwrap.dedent("""
        except errors.JobError as e:
            print("exit", e.exit_code, e, flush=True)
        else:
            print("exit", 0, flush=True)
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def markers(tmp_path) -> set[str]:
    return {p.stem for p in (tmp_path / "runs" / "life" / "stages").glob("*.json")}


# ---------------------------------------------------------------- stop control between and during stages
def test_sigterm_during_a_stage_that_finishes_in_time_stops_before_the_next(tmp_path):
    r = run_script(tmp_path, """
        def quick(ctx):
            sigterm(); time.sleep(0.3)  # the stage goes on after SIGTERM and ends inside the grace budget
            return {}
        pipeline.run(settings, [Stage("quick", quick), Stage("next", lambda c: {})])
    """)
    assert "exit 75" in r.stdout and "before stage next" in r.stdout, r.stdout + r.stderr
    assert markers(tmp_path) == {"quick"}


def test_sigterm_during_a_stage_longer_than_the_grace_budget_exits_75_without_its_marker(tmp_path):
    r = run_script(tmp_path, """
        def slow(ctx):
            sigterm(); time.sleep(30)  # cannot end within stop.grace_seconds=1
            return {}
        pipeline.run(settings, [Stage("slow", slow)])
    """)
    assert r.returncode == errors.EXIT_RETRY, r.stdout + r.stderr
    assert "grace budget" in r.stderr and "exit" not in r.stdout
    assert markers(tmp_path) == set()
    # the rerun completes the stage
    again = run_script(tmp_path, "pipeline.run(settings, [Stage('slow', lambda c: {})])")
    assert "exit 0" in again.stdout and markers(tmp_path) == {"slow"}


def test_the_runtime_counts_from_the_process_start(tmp_path):
    """max_runtime_seconds=2 after 1.5 s of imports and work: the stop comes at 2 s after the start,
    not 2 s after the stop control was made."""
    code = textwrap.dedent("""
        import time
        from grpo_job import stopping
        from grpo_job.settings import load_settings
        time.sleep(1.5)
        stop = stopping.from_settings(load_settings(overrides=["--stop.max_runtime_seconds=2",
                                                                "--stop.grace_seconds=0.2"]).stop)
        print(round(stop.seconds_left(), 1), stop.should_stop(), flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    left, reason = r.stdout.split()
    assert float(left) < 0.6 and reason in ("None", "deadline"), r.stdout + r.stderr


def test_a_step_is_interrupted_only_before_its_update_and_only_when_it_cannot_end_in_time(tmp_path):
    code = textwrap.dedent("""
        import os, signal, time
        from grpo_job.stopping import StepInterrupted, StopControl

        def case(last_step, interruptible, overrun=0.0):
            stop = StopControl(grace_seconds=2)
            stop.install()
            stop.last_step_seconds = last_step
            stop.step_began(interruptible=interruptible)
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05 + overrun)  # the step goes on (its generation)
                out = "finished"
            except StepInterrupted:
                out = "interrupted"
            stop.step_ended()
            stop.uninstall()
            return out

        print(case(last_step=0.0, interruptible=True),      # first step: its length is unknown
              case(last_step=30.0, interruptible=True),     # a 30 s step in a 2 s budget
              case(last_step=0.1, interruptible=True),      # a short step ends in time
              case(last_step=30.0, interruptible=False),    # past the optimizer step: never interrupted
              case(last_step=0.1, interruptible=True, overrun=3.0),  # guessed short, overran: the watchdog
              flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.stdout.split() == ["interrupted", "interrupted", "finished", "finished", "interrupted"], r.stderr


@pytest.mark.parametrize("last_step, said", [(0.0, "no step has ended in this process yet"),
                                              (12.5, "the last step took 12.5 s")])
def test_the_interrupted_step_message_says_what_it_knows_of_the_step_length(tmp_path, caplog, last_step, said):
    """After a resume, SIGTERM in the first step logged "(the last step took 0.0 s)" (operator trial)."""
    from types import SimpleNamespace

    from grpo_job.stopping import StopControl
    from grpo_job.training.train import save_last_finished_step

    stop = StopControl(grace_seconds=2)
    stop.signal_at, stop.last_step_seconds = time.monotonic(), last_step
    (tmp_path / "checkpoint-4").mkdir()  # the resumed step is saved already: nothing is written
    save_last_finished_step(SimpleNamespace(state=SimpleNamespace(global_step=4)), stop, tmp_path)
    assert f"SIGTERM during step 5, which cannot end within the grace budget ({said}" in caplog.text
    assert "0.0 s" not in caplog.text


# ---------------------------------------------------------------- checkpoints on time
def test_save_minutes_asks_for_a_checkpoint_once_the_time_has_passed():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from grpo_job.training import train

    now = [0.0]
    cb = train.save_on_time(0.5, clock=lambda: now[0])
    args, state = TrainingArguments(output_dir="/tmp/unused", save_steps=100), TrainerState()
    control = TrainerControl()
    cb.on_train_begin(args, state, control)
    saved = []
    for step, t in enumerate([10, 25, 31, 45, 60, 95], start=1):
        now[0], state.global_step = float(t), step
        control = TrainerControl()
        cb.on_step_end(args, state, control)
        if control.should_save:
            saved.append(step)
            cb.on_save(args, state, control)
    assert saved == [3, 6]  # 31 s >= 30 s after the start; 60 s is 29 s after that save; 95 s


def test_save_minutes_is_ours_not_a_grpoconfig_argument(tmp_path):
    from trl import GRPOConfig

    from grpo_job.training import engines, train

    s = settings_for(tmp_path, "--train.save_minutes=10", "--train.optim=adamw_torch", "--model.engine=trl")
    kwargs = train.grpo_config_kwargs(s, tmp_path / "out")
    assert "save_minutes" not in kwargs
    assert GRPOConfig(**kwargs, **engines.get("trl").grpo_args(s)).save_steps == s.train.save_steps


# ---------------------------------------------------------------- out of memory: settings or a retry
def test_out_of_memory_is_a_settings_error_before_training_and_retryable_after(tmp_path):
    import torch

    def oom(ctx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    s = settings_for(tmp_path)
    with pytest.raises(errors.SettingsError, match="GRPO_TRAIN__NUM_GENERATIONS"):
        pipeline.run(s, [Stage("evaluate_base", oom)])
    pipeline.run(s, [Stage("train", lambda c: {"steps": 3})])
    with pytest.raises(errors.OutOfMemoryLater, match="fresh process") as e:
        pipeline.run(s, [Stage("evaluate_trained", oom)])
    assert e.value.exit_code == errors.EXIT_OOM_LATER != errors.EXIT_INVALID
    assert not (tmp_path / "runs/life/stages/evaluate_trained.json").exists()


# ---------------------------------------------------------------- the stages after train: a fresh process
def test_the_stages_after_train_run_after_a_restart(tmp_path):
    calls, restarts = [], []

    def stage(name):
        return lambda ctx: calls.append(name) or {}

    s = settings_for(tmp_path)
    todo = [Stage("train", stage("train"), fresh_process_after=True), Stage("after", stage("after"))]

    class Restarted(Exception):
        pass

    def restart():
        restarts.append(len(calls))
        raise Restarted  # stands for os.execv, which does not return

    with pytest.raises(Restarted):
        pipeline.run(s, todo, restart=restart)
    assert calls == ["train"] and restarts == [1] and markers(tmp_path) == {"train"}
    pipeline.run(s, todo, restart=restart)  # the fresh process: train is done, no second restart
    assert calls == ["train", "after"] and restarts == [1]


# ---------------------------------------------------------------- an adapter training never changed
def _adapter(path: Path, changed: bool) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    if changed:  # one optimizer-like update on one module
        with torch.no_grad():
            next(p for n, p in model.named_parameters() if "lora_B" in n).add_(0.01)
    model.save_pretrained(path)


def test_an_unchanged_adapter_stops_before_merge_with_exit_3(tmp_path):
    from grpo_job.artifacts import export

    _adapter(tmp_path / "zero", changed=False)
    _adapter(tmp_path / "one", changed=True)
    assert export.changed_modules(tmp_path / "zero") == {"modules": 4, "changed": 0}
    assert export.changed_modules(tmp_path / "one") == {"modules": 4, "changed": 1}

    s = settings_for(tmp_path, "--hub.repo_id=tester/x")
    ctx = open_run(s)
    ctx.store.put_dir(tmp_path / "zero", "adapter")
    ctx.store.write_text(marker_key("train"), json.dumps({"steps": 5}))
    merge = [st for st in all_stages() if st.name == "merge"]
    with pytest.raises(errors.TrainingUnhealthy, match="GRPO_EXPORT__ALLOW_UNCHANGED_ADAPTER") as e:
        pipeline.run(s, merge)
    assert e.value.exit_code == errors.EXIT_UNHEALTHY and "after 5 steps" in str(e.value)
    assert not ctx.store.exists("merged/config.json") and not ctx.store.exists("stages/merge.json")


def test_closing_line_names_the_exit_and_the_artifacts(tmp_path, capsys):
    from grpo_job import cli, logs

    s = settings_for(tmp_path, "--log_format=json")
    ctx = open_run(s)
    ctx.store.write_text("adapter/adapter_config.json", "{}")
    ctx.store.write_text("gguf/model-q8_0.gguf", "x")
    logs.setup("json")
    cli.closing_line(errors.EXIT_RETRY, s)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["exit_code"] == 75 and line["run_id"] == "life" and "run again" in line["meaning"]
    assert line["artifacts"] == {"adapter": f"{ctx.store.uri}/adapter", "gguf": [f"{ctx.store.uri}/gguf/model-q8_0.gguf"]}


def test_the_closing_line_is_written_when_the_store_does_not_answer(tmp_path, capsys, monkeypatch):
    """Trial: a frozen S3 store; after the run's error the closing line asked the store for the artifacts and the
    process hung (300 s and counting), with no closing line. At the watchdog's exit it does not ask at all."""
    import time

    from grpo_job import cli, logs

    s = settings_for(tmp_path, "--log_format=json")
    monkeypatch.setattr(cli, "CLOSING_STORE_SECONDS", 0.3)
    monkeypatch.setattr(cli, "_artifacts", lambda store: time.sleep(30))
    logs.setup("json")
    t0 = time.monotonic()
    cli.closing_line(errors.EXIT_FAILURE, s)
    assert time.monotonic() - t0 < 5
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["exit_code"] == 1 and line["artifacts"] == {"store_error": "the store did not answer within 0.3 s"}
    cli.closing_line(errors.EXIT_RETRY, s, ask_store=False)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["artifacts"] == {"store": "not asked (the grace budget ran out)"}
    # the meaning is the code's (a log collector's contract), true of the watchdog's exit too: uploads cut off by the
    # budget are not in the store, and the message before this line names them (trial W: "everything finished is saved")
    assert line["meaning"] == errors.MEANING[75] and "complete checkpoints" in line["meaning"]


def test_finishes_within_waits_its_seconds_at_most_and_says_whether_the_call_returned():
    from grpo_job import stopping

    assert stopping.finishes_within(5, lambda: None, name="quick")
    t0 = time.monotonic()
    assert not stopping.finishes_within(0.2, time.sleep, 30, name="frozen")  # a daemon: left behind, it holds nothing
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("command", ["run", "check"])
def test_a_run_that_cannot_start_says_its_exit_code_on_the_error_record(tmp_path, command):
    # settings that load, input that does not exist: the preflight's error, not the loader's. `check`
    # writes no closing line, so the error record itself carries the code a log collector reads.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPO_")}
    env.update(GRPO_DATA__PATH=str(tmp_path / "missing.jsonl"), GRPO_STORE__URI=str(tmp_path / "runs"))
    done = subprocess.run([sys.executable, str(ROOT / "entrypoint.py"), command, "--config",
                           str(ROOT / "examples" / "smoke.yaml"), "--log_format=json"], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == errors.EXIT_INVALID
    records = [json.loads(line) for line in done.stderr.strip().splitlines()]
    error = next(r for r in records if r["level"] == "error")
    assert "missing.jsonl" in error["msg"] and "GRPO_DATA__PATH" in error["msg"]
    assert error["exit_code"] == 2 and error["meaning"] == errors.MEANING[2]


@pytest.mark.parametrize("command", ["run", "check"])  # one CI log: `check` is not text while `run` is JSON
@pytest.mark.parametrize("how, json_expected", [
    ([], True),  # auto, output not a terminal: JSON, as every later line of the run would be
    (["--log_format=text"], False),
    (["GRPO_LOG_FORMAT=text"], False),
    (["yaml:text"], False),
    # text or json in any case, spaces stripped; anything else (itself a failure to load) is auto
    (["--log_format=TEXT"], False),
    (["GRPO_LOG_FORMAT= text"], False),
    (["--log_format=jsn"], True),
    (["--log_format="], True),
    (["--log_format=null"], True),
    (["GRPO_LOG_FORMAT="], True),
    (["yaml:JSN"], True),
])
def test_settings_that_do_not_load_are_reported_in_the_log_format_asked_for(tmp_path, command, how, json_expected):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPO_")}
    env["GRPO_LORA__R"] = "0"
    args = [command]
    for h in how:
        if h.startswith("GRPO_"):
            env.update([h.split("=", 1)])
        elif h.startswith("yaml:"):
            (tmp_path / "c.yaml").write_text(f"log_format: {h[5:]}\n")
            args += ["--config", str(tmp_path / "c.yaml")]
        else:
            args.append(h)
    done = subprocess.run([sys.executable, str(ROOT / "entrypoint.py"), *args], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == errors.EXIT_INVALID and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    if json_expected:
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        assert len(records) == 1 and records[0]["exit_code"] == 2 and "lora.r [GRPO_LORA__R]" in records[0]["msg"]
    else:
        assert lines[0].startswith("error: invalid settings") and "lora.r [GRPO_LORA__R]" in done.stderr


def _catches_sigterm(pid: int) -> bool:
    """Whether process `pid` has a handler for SIGTERM (its SigCgt mask in /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def test_a_sigterm_before_the_run_began_exits_75_not_143(tmp_path):
    """Kubernetes may evict a pod while the job still imports (new-user trial: a SIGTERM in the first second
    gave 143, a failure, counted against backoffLimit). From the entry point's first lines it is 75."""
    env = {**os.environ, "GRPO_STORE__URI": str(tmp_path / "runs"), "GRPO_WORK_DIR": str(tmp_path / "w")}
    proc = subprocess.Popen([sys.executable, str(ROOT / "entrypoint.py"), "check", "--config",
                             str(ROOT / "examples/smoke.yaml")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not _catches_sigterm(proc.pid):  # the interpreter is up and the entry point has begun
            assert proc.poll() is None and time.monotonic() < deadline, "the entry point never took SIGTERM over"
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == errors.EXIT_RETRY
    finally:
        proc.kill()
        proc.communicate()


def test_a_full_disk_is_one_line_naming_the_settings_not_a_traceback(tmp_path, caplog):
    """A store or work dir out of space (new-user trial: a raw `OSError: [Errno 28]` traceback). /dev/full
    answers every write with ENOSPC, as a full volume does."""
    import logging

    from grpo_job import cli

    def fills_the_disk(ctx):
        with open("/dev/full", "wb") as f:
            f.write(b"x")
        return {}

    s = settings_for(tmp_path)
    with caplog.at_level(logging.ERROR):
        code = cli._guarded(lambda: pipeline.run(s, [Stage("save", fills_the_disk)]))
    assert code == errors.EXIT_FAILURE
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is None and "no space left on the device" in record.getMessage()
    assert "GRPO_STORE__URI" in record.getMessage() and "GRPO_WORK_DIR" in record.getMessage()
    assert not (tmp_path / "runs/life/stages/save.json").exists()


@pytest.mark.parametrize("extra", [[], ["--print-settings"]])
def test_check_in_json_mode_prints_its_plan_as_one_json_object(tmp_path, extra):
    """README: with `--log_format=json` every line on stdout and stderr is one JSON object (new-user trial:
    `check` printed 21 lines of text, `--print-settings` indented JSON)."""
    done = subprocess.run([sys.executable, str(ROOT / "entrypoint.py"), "check", "--config", str(ROOT / "examples/smoke.yaml"),
                           "--log_format=json", f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'w'}", *extra],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    [line] = done.stdout.splitlines()
    plan = json.loads(line)
    assert [s["stage"] for s in plan["stages"]][:2] == ["prepare_data", "reward_preflight"]
    assert plan["data_report"]["train_rows"] > 0 and plan["rewards"]
    # what the text plan's train line says (trial: the JSON plan had no train section)
    assert plan["train"]["max_steps"] == 4 and plan["train"]["loss_type"] == "dapo" and "extra" not in plan["train"]
    assert ("settings" in plan) == bool(extra) and all(json.loads(e) for e in done.stderr.splitlines())


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_check_prints_the_settings_also_when_the_check_fails(tmp_path, fmt):
    """Valid settings that meet a problem (here a missing data file): `--print-settings` still shows them, beside
    the error, exit 2 (trial: nothing was printed when the check failed)."""
    done = subprocess.run([sys.executable, str(ROOT / "entrypoint.py"), "check", "--config", str(ROOT / "examples/smoke.yaml"),
                           f"--log_format={fmt}", f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'w'}",
                           f"--data.path={tmp_path / 'missing.jsonl'}", "--print-settings"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    shown = json.loads(done.stdout)
    settings = shown["settings"] if fmt == "json" else shown
    assert settings["data"]["path"] == str(tmp_path / "missing.jsonl") and "missing.jsonl" in done.stderr


def test_an_exception_chain_that_loops_is_read_once():
    """An error whose context loops back to itself (the publish stage's Hub error did) held the job in
    disk_full_message for ever: the chain is walked once."""
    from grpo_job import cli

    a, b = RuntimeError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert cli.disk_full_message(a) is None
    c = OSError(28, "No space left on device", "/x")
    b.__context__ = c
    c.__context__ = a
    assert "writing /x" in cli.disk_full_message(a)
