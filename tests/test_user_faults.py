"""What users hit (issue 23, items 4-8 and 10-12), each fault as its whole kind, in table tests whose inputs
are not the ones the fixes were written against: weight-0 (log-only) rewards, a token that cannot write to
the Hub, text files with a byte-order mark, reward scores of other numeric types, warm-up on very short
runs, the deadline inside a later stage, datasets in TRL's own format, and the answer checker and
settings messages. Fast: functions called directly, a local Hub stand-in, two short subprocesses."""

import decimal
import fractions
import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hub_server import HubServer

from grpo_job import answers, data, stopping
from grpo_job import rewards as R
from grpo_job.context import open_run
from grpo_job.errors import SettingsError
from grpo_job.rewards import calls as reward_calls
from grpo_job.settings import DataSettings, load_settings, rules
from grpo_job.settings.provenance import source_label
from grpo_job.settings.sources import read_yaml
from grpo_job.training import health

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "examples" / "smoke.yaml"
TOKEN = "hf_user_faults_0123456789SECRET"
ROWS = [{"prompt": [{"role": "user", "content": f"q{i}"}], "answer": str(a)} for i, a in enumerate([3, 8, 15])]


# ---------------------------------------------------------------- 4: weight-0 rewards are logged, not signal
def _rewards_returning(values):
    """A reward per entry of `values`, each returning its own list of scores (one per completion)."""
    def returning(scores):
        return lambda completions, **kw: list(scores)

    return {name: returning(v) for name, v in values.items()}


@pytest.mark.parametrize("weights, scores, no_variance, all_zero", [
    # a log-only reward that varies hides nothing: the trained one is constant
    ({"trained": 1.0, "watch": 0.0}, {"trained": [0.5, 0.5, 0.5], "watch": [0.0, 1.0, 0.3]}, True, False),
    # the trained one varies: signal, whatever the log-only one does
    ({"trained": 2.0, "watch": 0}, {"trained": [0.0, 1.0, 0.0], "watch": [0.0, 0.0, 0.0]}, False, False),
    # a negative weight (a penalty) still trains
    ({"penalty": -1.0, "watch": 0.0}, {"penalty": [0.0, -0.5, 0.0], "watch": [1.0, 0.0, 1.0]}, False, False),
    # every trained reward 0 on every completion, the log-only one not
    ({"a": 0.5, "b": 1.5, "watch": 0.0}, {"a": [0, 0, 0], "b": [0, 0, 0], "watch": [1, 1, 0]}, True, True),
])
def test_preflight_variance_counts_weighted_rewards_only(weights, scores, no_variance, all_zero):
    got = reward_calls.check_rewards(_rewards_returning(scores), ROWS, ["x", "y", "z"])
    verdict = health.signal_verdict(got, health.reward_report(got), health.weighted(weights))
    assert verdict["no_variance"] is no_variance and verdict["all_zero"] is all_zero
    assert set(verdict["trained"]) == {n for n, w in weights.items() if w != 0}


@pytest.mark.parametrize("rewards_setting, logged_zero, stops", [
    ('{"partial_format": 1.0, "correctness": 0}', "correctness_reward", False),  # weight 0: never a reason to stop
    ('{"partial_format": 1.0, "correctness": {"weight": 0.0}}', "correctness_reward", False),  # as an entry
    ('{"partial_format": 0, "correctness": 1.0}', "partial_format_reward", False),
    ('{"partial_format": 1.0, "correctness": 0.5}', "correctness_reward", True),  # weighted: the guard still acts
    ('{"partial_format": 1.0, "correctness": -0.5}', "correctness_reward", True),  # a penalty trains too
])
def test_zero_reward_guard_ignores_log_only_rewards(rewards_setting, logged_zero, stops):
    s = load_settings(SMOKE, [f"--rewards={rewards_setting}", "--health.zero_reward_steps=3",
                              "--health.zero_std_steps=0"])
    guards = health.Guards(s, R.log_names(R.build_all(s.rewards, s.data.answer_type)))
    (other,) = {"partial_format_reward", "correctness_reward"} - {logged_zero}
    logs = {f"rewards/{logged_zero}/mean": 0.0, f"rewards/{other}/mean": 0.5, "frac_reward_zero_std": 0.5}
    msgs = [guards.observe(step, logs) for step in range(1, 6)]
    assert any(msgs) is stops


@pytest.mark.parametrize("rewards_setting, problem, warned", [
    ('{"format": 0, "correctness": 0.0}', True, []),
    ('{"correctness": {"weight": 0}}', True, []),
    ('{"format": 0, "correctness": 2.0}', False, ["rewards.format has weight 0"]),
    ('{"format": -0.25, "correctness": 1.0}', False, ["rewards.format has a negative weight (-0.25)"]),
    ('{"format": 0.5, "correctness": 2.0}', False, []),
])
def test_zero_and_negative_weights_are_reported(rewards_setting, problem, warned):
    if problem:
        with pytest.raises(SettingsError, match="every reward has weight 0"):
            load_settings(SMOKE, [f"--rewards={rewards_setting}"])
        return
    s = load_settings(SMOKE, [f"--rewards={rewards_setting}"])
    got = [w for w in rules.warnings(s) if w.startswith("rewards.") and "weight" in w]
    assert len(got) == len(warned) and all(any(w in g for g in got) for w in warned), got


# ---------------------------------------------------------------- 5: a token that cannot write to the Hub
def _who(role, name="ana", orgs=(), scoped=None, global_=None):
    token = {"displayName": "t", "role": role}
    if role == "fineGrained":
        token["fineGrained"] = {"scoped": scoped or [], "global": global_ or []}
    return {"type": "user", "name": name, "orgs": [{"name": o, "roleInOrg": r} for o, r in orgs],
            "auth": {"type": "access_token", "accessToken": token}}


@pytest.mark.parametrize("who, repo_id, words", [
    (_who("write"), "ana/model", None),
    (_who("write", orgs=[("lab", "contributor")]), "lab/model", None),
    (_who("write", orgs=[("lab", "admin")]), "lab/m", None),
    (_who("read"), "ana/model", "read-only"),
    (_who("write"), "someone-else/model", "not a member of 'someone-else'"),
    (_who("write", orgs=[("lab", "read")]), "lab/model", "read role in 'lab'"),
    (_who("fineGrained", scoped=[{"entity": {"type": "user", "name": "ana"}, "permissions": ["repo.content.read",
                                                                                           "repo.write"]}]),
     "ana/model", None),
    (_who("fineGrained", orgs=[("lab", "write")],
          scoped=[{"entity": {"type": "org", "name": "lab"}, "permissions": ["repo.write"]}]), "lab/x", None),
    (_who("fineGrained", scoped=[{"entity": {"type": "model", "name": "ana/exact"}, "permissions": ["repo.write"]}]),
     "ana/exact", None),
    (_who("fineGrained", scoped=[{"entity": {"type": "user", "name": "ana"}, "permissions": ["repo.content.read"]}]),
     "ana/model", "without the permission repo.write"),
    (_who("fineGrained", orgs=[("lab", "write")],
          scoped=[{"entity": {"type": "user", "name": "ana"}, "permissions": ["repo.write"]}]), "lab/x",
     "without the permission repo.write on lab"),
])
def test_token_write_access_from_whoami(who, repo_id, words):
    from grpo_job.artifacts import publish

    problem, _ = publish.token_write_problem(who, repo_id)
    if words is None:
        assert problem is None
    else:
        assert problem and words in problem and f"hub.repo_id={repo_id}" in problem and "HF_TOKEN" in problem


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    with HubServer(tmp_path / "hub", TOKEN) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield hub


def test_check_asks_the_hub_and_skips_with_a_note_when_it_cannot(local_hub, monkeypatch):
    from huggingface_hub import constants

    from grpo_job.artifacts import publish

    assert publish.hub_write_problem("tester/m", TOKEN) == (None, None)
    problem, _ = publish.hub_write_problem("tester/m", "hf_wrong_token")
    assert problem and "HTTP 401" in problem
    local_hub.state.whoami = _who("read", name="tester")
    problem, _ = publish.hub_write_problem("tester/m", TOKEN)
    assert problem and "read-only" in problem
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    problem, note = publish.hub_write_problem("tester/m", TOKEN)
    assert problem is None and "not checked" in note
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert publish.hub_write_problem("tester/m", TOKEN) == (None, "Hub write access not checked: HF_HUB_OFFLINE is set")


@pytest.mark.parametrize("repo_id, repo_type, revision, words", [
    ("org/model", "model", None, None),
    ("org/model", "model", "v1", "model.revision=v1: org/model has no such revision"),
    ("org/modle", "model", None, "model.name_or_path=org/modle: no such model"),
    ("org/gated", "model", None, "is a gated model and the token has no access"),
    ("org/ds", "dataset", None, None),
    ("org/model", "dataset", None, "data.path=org/model: no such dataset"),  # a model's id is no dataset's
    ("org/ds", "dataset", "nope", "data.revision=nope: org/ds has no such revision"),
])
def test_check_asks_the_hub_whether_the_model_and_data_can_be_read(local_hub, repo_id, repo_type, revision, words):
    """A typo in a Hub id, a gated model, a revision that is not there: found by `check` (new-user trial: it
    passed, and the run would have failed after the GPU was allocated, as exit 1)."""
    from grpo_job import hub

    local_hub.add_repo("org/model")
    local_hub.add_repo("org/gated", gated=True)
    local_hub.add_repo("org/ds", repo_type="dataset")
    setting = "model.name_or_path" if repo_type == "model" else "data.path"
    revision_setting = "model.revision" if repo_type == "model" else "data.revision"
    problem, note = hub.read_problem(repo_id, repo_type, revision, TOKEN, setting, revision_setting)
    assert note is None
    if words is None:
        assert problem is None
    else:
        assert problem and words in problem and "set " in problem


def test_the_hub_read_check_says_what_it_could_not_ask(local_hub, monkeypatch):
    from huggingface_hub import constants

    from grpo_job import hub

    local_hub.add_repo("org/model")
    problem, _ = hub.read_problem("org/model", "model", None, "hf_wrong_token", "model.name_or_path", "model.revision")
    assert problem and "HTTP 401" in problem and "HF_TOKEN" in problem
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    problem, note = hub.read_problem("org/model", "model", None, TOKEN, "model.name_or_path", "model.revision")
    assert problem is None and "not checked" in note
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    problem, note = hub.read_problem("org/model", "model", None, TOKEN, "model.name_or_path", "model.revision")
    assert "not in the local Hub cache" in problem and "HF_HUB_OFFLINE" in problem and note is None
    assert hub.read_problem("org/ds", "dataset", None, TOKEN, "data.path", "data.revision") == (
        None, "data.path=org/ds not checked on the Hub: HF_HUB_OFFLINE is set")


def test_check_names_a_model_path_that_is_not_there_and_a_typo_on_the_hub(local_hub, tmp_path, monkeypatch, capsys):
    """Through `check` itself: a folder that is not mounted was a traceback from the Hub client; a Hub id
    with a typo passed."""
    from grpo_job import cli

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    local_hub.add_repo("org/model")
    base = ["check", "--log_format=text", f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'w'}",
            "--data.path=builtin:arithmetic", "--train.optim=adamw_torch"]
    assert cli.main([*base, "--model.name_or_path=/models/not-mounted"]) == 2
    assert "'/models/not-mounted' is no folder on this machine" in capsys.readouterr().err
    # with a GGUF file named, the folder is what is missing, not the file (new-user trial: it blamed the file)
    assert cli.main([*base, "--model.name_or_path=/models/not-mounted", "--model.gguf_file=m.gguf"]) == 2
    err = capsys.readouterr().err
    assert "model.name_or_path='/models/not-mounted' is no folder" in err and "GRPO_MODEL__NAME_OR_PATH" in err
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m-q8_0.gguf").write_bytes(b"GGUF")
    assert cli.main([*base, f"--model.name_or_path={tmp_path / 'models'}", "--model.gguf_file=m.gguf"]) == 2
    assert "model.gguf_file='m.gguf' is not in" in (err := capsys.readouterr().err) and "m-q8_0.gguf" in err
    (tmp_path / "empty-model").mkdir()  # a volume mounted empty: it passed, for from_pretrained to fail later
    assert cli.main([*base, f"--model.name_or_path={tmp_path / 'empty-model'}", "--model.gguf_file=null"]) == 2
    assert "is a folder with no model in it" in capsys.readouterr().err
    assert cli.main([*base, "--model.name_or_path=org/modle"]) == 2
    assert "model.name_or_path=org/modle: no such model" in capsys.readouterr().err
    assert cli.main([*base, "--model.name_or_path=org/model", "--model.max_seq_length=1024"]) == 0


def test_a_refused_push_is_exit_2_in_one_line_and_the_model_stays(local_hub, tmp_path, monkeypatch):
    from grpo_job.artifacts import publish

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    s = load_settings(None, [f"--store.uri={tmp_path / 'runs'}", "--run_id=pub", f"--work_dir={tmp_path / 'w'}",
                             "--data.path=builtin:arithmetic", "--hub.repo_id=tester/m", "--export.merge=false",
                             "--export.quantizations=[]", "--hub.include_adapter=true"])
    ctx = open_run(s)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    ctx.store.put_dir(adapter, "adapter")
    local_hub.state.read_only = True
    with pytest.raises(SettingsError) as e:
        publish.publish(ctx)
    msg = str(e.value)
    assert e.value.exit_code == 2 and "\n" not in msg and "HTTP 403" in msg and "tester/m" in msg
    assert "run store" in msg and ctx.store.exists("adapter/adapter_config.json")
    local_hub.state.read_only = False
    assert publish.publish(ctx)["repo_id"] == "tester/m"  # the same stage with write access goes through


# ---------------------------------------------------------------- 6: text files with a byte-order mark
BOM = "\ufeff"


@pytest.mark.parametrize("name, text", [
    ("rows.jsonl", '{"question": "How many legs have 2 cats?", "answer": "2 * 4 = 8\\n#### 8"}\n'
                   '{"question": "3 + 3?", "answer": "#### 6"}\n'),
    ("rows.csv", 'question,answer\r\n"How many legs have 2 cats?","#### 8"\r\n3 + 3?,#### 6\r\n'),
    ("rows.json", '[{"question": "How many legs have 2 cats?", "answer": "#### 8"}, '
                  '{"question": "3 + 3?", "answer": "#### 6"}]'),
])
def test_files_with_a_byte_order_mark_read_like_without(tmp_path, name, text):
    plain, marked = tmp_path / f"plain-{name}", tmp_path / f"bom-{name}"
    plain.write_text(text, encoding="utf-8")
    marked.write_text(BOM + text, encoding="utf-8")
    assert data.read_rows(marked) == data.read_rows(plain)
    assert data.peek_columns(marked) == ["question", "answer"]
    mapped = data.map_rows(data.read_rows(marked), DataSettings(), "f")
    assert [r["answer"] for r in mapped] == ["8", "6"]


def test_a_settings_file_with_a_byte_order_mark_loads(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(BOM + "train:\n  max_steps: 7\nrewards:\n  correctness: 2.0\n", encoding="utf-8")
    assert read_yaml(str(cfg)) == {"train": {"max_steps": 7}, "rewards": {"correctness": 2.0}}
    assert load_settings(cfg).train.max_steps == 7


# ---------------------------------------------------------------- 7: scores TRL accepts
@pytest.mark.parametrize("value, accepted", [
    (np.float64(0.25), True), (np.int32(1), True), (np.bool_(False), True), (np.float16(0.5), True),
    (fractions.Fraction(1, 3), True), (decimal.Decimal("0.1"), True), (False, True), (None, True),
    (-7, True),  # inf: TRL takes it, but it makes the advantages NaN (test_health: refused)
    ("0.5", False), (1 + 2j, False), (np.complex64(1), False), (np.array([0.5]), False), ([0.5], False),
    ({"score": 1}, False), (b"1", False),
])
def test_reward_scores_accepted_as_trl_accepts_them(value, accepted):
    reward = {"scored": lambda completions, **kw: [value] * len(completions)}
    if accepted:
        got = reward_calls.check_rewards(reward, ROWS, ["a", "b", "c"], light=True)["scored"]
        assert all(math.isnan(v) for v in got) if value is None else got == [float(value)] * 3
    else:
        with pytest.raises(SettingsError, match="returned a non-number"):
            reward_calls.check_rewards(reward, ROWS, ["a", "b", "c"], light=True)


def test_a_0d_torch_tensor_is_a_score_as_in_trl():
    import torch

    assert reward_calls.is_score(torch.tensor(0.5)) and reward_calls.is_score(torch.tensor(1))
    assert not reward_calls.is_score(torch.tensor([0.5])) and not reward_calls.is_score(torch.tensor(1 + 1j))


# ---------------------------------------------------------------- 8: warm-up leaves a step that learns
@pytest.mark.parametrize("max_steps, warmup, scheduler", [
    (1, 0.05, "cosine"), (1, 0.9, "linear"), (1, 3, "constant_with_warmup"), (2, 0.5, "cosine"),
    (2, 10, "linear"), (3, 0.99, "cosine"), (5, 0.0, "linear"), (3, 0.05, "cosine"), (20, 0.05, "linear"),
    (21, 0.05, "cosine"), (4, 1, "linear"),
])
def test_some_step_trains_at_a_non_zero_learning_rate(tmp_path, max_steps, warmup, scheduler):
    import torch
    from transformers import TrainingArguments, get_scheduler

    from grpo_job.training.train import grpo_config_kwargs

    s = load_settings(SMOKE, [f"--train.max_steps={max_steps}", f"--train.warmup_steps={warmup}",
                              f"--train.lr_scheduler_type={scheduler}", "--train.save_steps=1"])
    kwargs = grpo_config_kwargs(s, tmp_path)
    args = TrainingArguments(output_dir=str(tmp_path), warmup_steps=kwargs["warmup_steps"], max_steps=max_steps,
                             report_to="none")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=s.train.learning_rate)
    sched = get_scheduler(scheduler, optimizer, num_warmup_steps=args.get_warmup_steps(max_steps),
                          num_training_steps=max_steps)
    rates = []
    for _ in range(max_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sched.step()
    assert any(r > 0 for r in rates), rates
    # a share that rounds to one step is no warm-up: every step learns (trial: step 1 of 3 at rate 0)
    assert all(r > 0 for r in rates) is (max_steps == 1 or (warmup < 1 and math.ceil(max_steps * warmup) <= 1)), rates
    said = [w for w in rules.warnings(s) if "warm-up" in w]
    assert bool(said) is (max_steps == 1 and warmup > 0)


# ---------------------------------------------------------------- 10: the deadline in a stage after train
@pytest.mark.parametrize("stage, words", [
    ("evaluate_trained", ["stage 'evaluate_trained'", "cut short", "runs again"]),
    ("publish", ["stage 'publish'", "runs again", "trained model in the store"]),
    ("train", ["checkpoint", "current step is abandoned"]),
    (None, ["checkpoint"]),
])
def test_the_hard_exit_names_the_stage_cut_short(stage, words):
    control = stopping.StopControl(5.0)
    control.signal_at = 0.0
    control.stage = stage
    msg = control.hard_exit_message()
    assert all(w in msg for w in words), msg
    assert "GRPO_STOP__GRACE_SECONDS" in msg


def test_a_stage_after_train_cut_short_by_the_grace_budget_says_so(tmp_path):
    """A real process: the pipeline runs a late stage that overruns the grace budget after SIGTERM; the
    watchdog exits 75 naming that stage (not a checkpoint) and its marker is not written."""
    code = textwrap.dedent(f"""
        import os, signal, time
        from grpo_job import pipeline, stopping
        from grpo_job.settings import load_settings
        from grpo_job.stages import Stage
        settings = load_settings(overrides=["--store.uri={tmp_path / 'runs'}", "--run_id=late",
                                            "--work_dir={tmp_path / 'w'}", "--data.path=builtin:arithmetic",
                                            "--stop.grace_seconds=1"])
        stopping.install_for_run(settings.stop)
        def slow(ctx):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(20)
            return {{}}
        pipeline.run(settings, [Stage("evaluate_trained", slow)])
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert done.returncode == 75, done.stderr[-2000:]
    assert "stage 'evaluate_trained', which was cut short" in done.stderr and "runs again" in done.stderr
    assert not (tmp_path / "runs" / "late" / "stages" / "evaluate_trained.json").exists()


def test_the_watchdog_exits_on_time_when_its_last_words_hang_and_names_unsaved_checkpoints(tmp_path):
    """Trial: a frozen S3 endpoint; after SIGTERM the grace budget ran out, but the closing line asked the store for
    the run's artifacts and held the process 90 s past its budget (Kubernetes would SIGKILL it at 30-60 s), and the
    exit said nothing of the checkpoints whose uploads never ended."""
    code = textwrap.dedent("""
        import logging, os, signal, sys, time
        from grpo_job import stopping
        logging.basicConfig(stream=sys.stderr, level=logging.INFO)
        control = stopping.StopControl(1.0)
        control.stage = "train"
        control.on_hard_exit = lambda code: time.sleep(60)  # the store does not answer
        control.unsaved_steps = lambda: [4, 6]
        control.install()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)  # the main thread waits on the hung upload
    """)
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert done.returncode == 75, done.stderr[-2000:]
    assert time.monotonic() - t0 < 1.0 + stopping.LAST_WORDS_SECONDS + 10, "the hung last words held the exit"
    assert "ran out while checkpoint(s) 4, 6 were uploading (is the store answering?): they are not in the store and " \
           "are lost" in done.stderr, done.stderr[-2000:]
    assert "the current step is abandoned" not in done.stderr


# ---------------------------------------------------------------- 11: TRL's own dataset format
CHAT = [{"role": "user", "content": "What is 6 * 7?"}]


@pytest.mark.parametrize("settings, row, prompt_col, answer_col, reference", [
    ({"answer_column": "solution"}, {"prompt": CHAT, "solution": "42"}, "prompt", "solution", "42"),
    ({}, {"prompt": CHAT, "solution": "42"}, "prompt", "solution", "42"),
    ({}, {"prompt": "What is 6 * 7?", "answer": "42"}, "prompt", "answer", "42"),
    ({"task": "math"}, {"prompt": CHAT, "answer": "\\frac{1}{2}"}, "prompt", "answer", "\\frac{1}{2}"),
    ({"task": "math"}, {"prompt": "x?", "solution": "so \\boxed{7}"}, "prompt", "solution", "7"),
    ({}, {"prompt": CHAT, "solution": "6 * 7 = 42\n#### 42"}, "prompt", "solution", "42"),
    # the task's own columns there: used as before (TRL's are not looked at)
    ({}, {"question": "6 * 7?", "answer": "#### 42", "solution": "x"}, "question", "answer", "42"),
    ({"task": "math"}, {"problem": "p", "solution": "\\boxed{3}", "hint": "4"}, "problem", "solution", "3"),
])
def test_trl_format_needs_no_mapping(tmp_path, settings, row, prompt_col, answer_col, reference):
    ds = DataSettings(path=str(tmp_path / "d.jsonl"), eval_fraction=0, **settings)
    Path(ds.path).write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    train, _, summary = data.prepare(ds, tmp_path / "cache")
    assert (summary["prompt_column"], summary["answer_column"]) == (prompt_col, answer_col)
    assert train[0]["answer"] == reference
    assert train[0]["prompt"][-1]["content"] == (row[prompt_col] if isinstance(row[prompt_col], str)
                                                 else row[prompt_col][-1]["content"])
    note = summary.get("columns_note")
    assert (note is not None) is (prompt_col != data.TASKS[ds.task].prompt_column
                                  or answer_col not in (data.TASKS[ds.task].answer_column, ds.answer_column))
    if note:
        assert "TRL's standard column" in note


def test_a_set_prompt_column_is_never_replaced():
    ds = DataSettings(prompt_column="query")
    with pytest.raises(SettingsError, match=r"lacks column\(s\) \['query'\]"):
        data.map_rows([{"prompt": "p", "answer": "#### 1"}], ds, "f")


@pytest.mark.parametrize(("columns", "row", "hint"), [
    # trial: a header's capital letter or a plural, set by hand
    ({"answer_column": "Expected"}, {"question": "q", "expected": "1"}, "did you mean 'expected' for 'Expected'?"),
    ({"prompt_column": "querys", "answer_column": "units"}, {"query": "q", "unit": "m"},
     "did you mean 'query' for 'querys', 'unit' for 'units'?"),
    ({"answer_column": "solution"}, {"question": "q", "label": "1"}, None),  # nothing close: no guess
])
def test_a_missing_column_names_the_close_one(columns, row, hint):
    with pytest.raises(SettingsError) as e:
        data.map_rows([row], DataSettings(task="plain", **columns), "f")
    assert "lacks column(s)" in str(e.value) and (hint in str(e.value) if hint else "did you mean" not in str(e.value))


# ---------------------------------------------------------------- 12: the answer checker
@pytest.mark.parametrize("prediction, reference, answer_type, ok", [
    # a worked line inside a sentence
    ("So she pays 4 * 12 = 48 dollars in total", "48", "auto", True),
    ("That makes 7 + 8 + 9 = 24 apples.", "24", "auto", True),
    ("That makes 7 + 8 = 16 apples", "16", "auto", False),  # it does not hold
    ("After 3 days, 5 * 4 = 20 birds", "20", "auto", False),  # another number before it
    ("She has not 6 * 2 = 12 pens", "12", "auto", False),  # a denial
    # a value with a unit, LaTeX or not
    ("\\frac{2}{3} cup", "2/3 cups", "auto", True),
    ("0.75 cup", "\\frac{3}{4} cup", "auto", True),
    ("12 \\text{ m}^3", "12", "auto", True),
    ("9", "9 \\text{ km}^2", "auto", True),
    ("8 \\text{ cm}^2", "9", "auto", False),
    ("7/2 liters", "3.5", "auto", True),
    ("5 squared", "5", "auto", False),
    # both name a unit: the units must agree (found by a new user's trial: `120 miles` scored against `120 km`)
    ("120 miles", "120 km", "auto", False),
    ("120 km/h", "120 km", "auto", False),
    ("4 \\text{ m}^2", "4 \\text{ cm}^2", "auto", False),
    ("120 KM.", "120 km", "auto", True),
    ("3 apples", "3 apple", "auto", True),
    ("12 eggs", "12 eggs", "auto", True),
    ("1.5 million", "1500000", "auto", True),  # a multiplier is not a unit
    # chemical formulas: subscripts written alike, case kept
    ("H_2O", "H2O", "auto", True),
    ("SO_{4}", "SO4", "auto", True),
    ("C₆H₁₂O₆", "C6H12O6", "auto", True),
    ("NaCl", "NaCl", "auto", True),
    ("NACL", "NaCl", "auto", False),
    ("Yes", "YES", "auto", True),  # capitals alone are words, not a formula
    # exact keeps case
    ("Hg", "HG", "exact", False),
    ("Paris", "paris", "exact", False),
    ("  **Paris** ", "Paris", "exact", True),
    ("paris", "Paris", "auto", True),
])
def test_answer_checker_kinds(prediction, reference, answer_type, ok):
    assert answers.verify(prediction, reference, answer_type) is ok


@pytest.mark.parametrize("kind", ["Exact", "string", "numeric", "", None, "MATH"])
def test_an_unknown_answer_type_is_an_error_not_math(kind):
    with pytest.raises(answers.UnknownAnswerType, match="unknown answer_type"):
        answers.verify("2", "2", kind)
    rows = data.map_rows([{"question": "q", "answer": "#### 2", "answer_type": kind}], DataSettings(), "f")
    with pytest.raises(SettingsError, match="a row of the data, column 'answer_type'.*\"answer\": \"2\""):
        data.check_references(rows, DataSettings())


def test_the_answer_worker_needs_no_main_guard(tmp_path):
    """A user script without `if __name__ == "__main__":` scores off the main thread (TRL's async rewards)
    through the spawned worker, which must not run the script again."""
    script = tmp_path / "score.py"
    script.write_text(textwrap.dedent("""
        import threading
        from grpo_job import answers
        print("SCRIPT RAN")
        out = {}
        t = threading.Thread(target=lambda: out.update(r=answers.verify("\\\\frac{6}{8}", "0.75")))
        t.start(); t.join(120)
        print("RESULT", out)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("SCRIPT RAN") == 1 and "RESULT {'r': True}" in done.stdout, done.stdout
    assert "bootstrapping phase" not in done.stderr


# ---------------------------------------------------------------- 12: settings errors name their source
@pytest.mark.parametrize("cli, env, yaml_text, label", [
    (["--lora.r=0"], {}, None, "lora.r [--lora.r on the command line]"),
    (['--lora={"r": 0}'], {}, None, "lora.r [--lora on the command line]"),
    ([], {"GRPO_LORA__R": "0"}, None, "lora.r [GRPO_LORA__R]"),
    ([], {}, "lora:\n  r: 0\n", "lora.r [config file "),
    (["--lora.r=0"], {"GRPO_LORA__R": "8"}, "lora:\n  r: 4\n", "lora.r [--lora.r on the command line]"),
    ([], {"GRPO_LORA__R": "-1"}, "lora:\n  r: 4\n", "lora.r [GRPO_LORA__R]"),
    ([], {}, "lora:\n  rank: 4\n", "lora.rank [config file "),
])
def test_schema_errors_name_the_source_of_the_value(tmp_path, monkeypatch, cli, env, yaml_text, label):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = None
    if yaml_text is not None:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml_text)
    with pytest.raises(SettingsError) as e:
        load_settings(cfg, cli)
    assert label in str(e.value), str(e.value)
    if "GRPO_" not in label:
        assert "GRPO_LORA__R" not in str(e.value)


def test_source_label_prefers_the_command_line_then_the_environment():
    yaml_values = {"train": {"max_steps": 3}}
    loc = ("train", "max_steps")
    assert source_label(loc, ("--train.max_steps", "5"), yaml_values, "c.yaml", {}) == \
        "--train.max_steps on the command line"
    assert source_label(loc, (), yaml_values, "c.yaml", {"grpo_train__max_steps": "5"}) == "grpo_train__max_steps"
    assert source_label(loc, (), yaml_values, "c.yaml", {}) == "config file 'c.yaml'"
    assert source_label(loc, (), {}, None, {}) == "GRPO_TRAIN__MAX_STEPS"


# ---------------------------------------------------------------- 12: evaluation files are checked like training data
@pytest.mark.parametrize("rows, words", [
    ([{"question": "a", "answer": "#### 1", "n": 1}, {"question": "b", "answer": "#### 2", "n": "two"}],
     "column 'n'"),
    ([{"question": "a", "answer": "no final answer here"}, {"question": "b", "answer": "none either"},
      {"question": "c", "answer": "#### 3"}], "cannot be parsed"),
    ([{"question": "a", "answer": "#### 1", "answer_type": "numeric"}], "column 'answer_type'"),
])
def test_evaluation_files_are_checked_for_types_and_references(tmp_path, rows, words):
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SettingsError, match=words) as e:
        data.evaluation_rows(str(path), DataSettings(answer_type="math"))
    assert "evaluation.data_path" in str(e.value)


@pytest.mark.parametrize("value, expected", [("TEXT", "text"), ("Json", "json"), (" auto ", "auto")])
def test_log_format_is_read_in_any_case(monkeypatch, value, expected):
    """Found by a new user's trial: GRPO_LOG_FORMAT=TEXT was refused though the README says any case."""
    from grpo_job.settings import load_settings

    monkeypatch.setenv("GRPO_LOG_FORMAT", value)
    assert load_settings().log_format == expected


def test_a_column_of_mixed_shapes_is_kept_as_json_text_and_mixed_scalars_are_refused(tmp_path):
    """Found by new users' trials: the code reward's tests in two forms across rows were refused (the way out was
    to rewrite every value as JSON text); the job now keeps each list as its JSON text, which the reward decodes.
    Numbers in some rows and text in others stay an error: which one was meant is not the job's to guess."""
    import json

    from grpo_job.rewards.code import read_tests

    f = tmp_path / "code.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [{"prompt": "p", "answer": "a", "tests": "assert f() == 1"},
                                                      {"prompt": "q", "answer": "b", "tests": ["assert f() == 2"]}]))
    train, _, _ = data.prepare(DataSettings(path=str(f), task="plain", eval_fraction=0), tmp_path / "cache")
    assert sorted(r["tests"] for r in train) == ['["assert f() == 2"]', "assert f() == 1"]
    assert sorted(read_tests(r["tests"])[1][0] for r in train) == ["assert f() == 1", "assert f() == 2"]
    f.write_text("\n".join(json.dumps(r) for r in [{"prompt": "p", "answer": "a", "level": 1},
                                                      {"prompt": "q", "answer": "b", "level": "hard"}]))
    # the odd rows are counted and one is shown (second trial: "Expected bytes, got a 'int' object", no row)
    with pytest.raises(SettingsError, match=r"column 'level' .*mixes value types across rows \(1 (int|str), 1 (int|str); 1 row\(s\) "
                                            r"of (int|str), e\.g\. .*one type in every row"):
        data.prepare(DataSettings(path=str(f), task="plain"), tmp_path / "cache")


def test_check_creates_no_store_folder_and_names_a_file_in_the_way(tmp_path, capsys):
    """`check` made the run's folder in the store (an empty `./s3:/bucket/x/smoke` for a mistyped URI,
    new-user trial); it now only checks that the nearest existing folder is writable."""
    from grpo_job import cli

    base = ["check", "--log_format=text", f"--work_dir={tmp_path / 'w'}", "--data.path=builtin:arithmetic",
            "--train.optim=adamw_torch"]
    assert cli.main([*base, f"--store.uri={tmp_path / 'new' / 'runs'}"]) == 0
    assert not (tmp_path / "new").exists()
    (tmp_path / "a-file").write_text("")
    assert cli.main([*base, f"--store.uri={tmp_path / 'a-file' / 'runs'}"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_second_config_file_is_refused_not_silently_dropped(capsys):
    """argparse kept the last `--config` of two: the first file's settings were dropped without a word."""
    from grpo_job import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["check", "--config", "base.yaml", "--config", "steps.yaml"])
    assert e.value.code == 2
    assert "--config given twice ('base.yaml' and 'steps.yaml')" in capsys.readouterr().err


def test_check_shows_the_grpo_config_arguments_the_run_passes(tmp_path, monkeypatch, capsys):
    """`train.extra` showed nowhere but settings.json (second trial): the plan has it, as GRPOConfig gets it."""
    import os

    from grpo_job import cli

    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    for k, v in {"GRPO_CONFIG": str(ROOT / "examples" / "smoke.yaml"), "GRPO_STORE__URI": str(tmp_path / "runs"),
                 "GRPO_WORK_DIR": str(tmp_path / "work"), "GRPO_TRAIN__EXTRA__EPSILON_HIGH": "2.8e-1"}.items():
        monkeypatch.setenv(k, v)
    assert cli.main(["check", "--log_format=text"]) == 0
    out = capsys.readouterr().out
    assert 'extra  : {"epsilon_high": 0.28}' in out
    # the loss's own settings beside it (trial: beta, optim and loss_type were in settings.json only)
    assert "lr 0.0001 cosine (adamw_torch), loss dapo, beta 0," in out


def test_a_grpo_config_number_that_is_not_finite_is_refused(tmp_path, monkeypatch, capsys):
    """`epsilon_high: 1e400` is inf to a float and passed `check` (trial); TRL would clip with it."""
    import os

    from grpo_job import cli

    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    for k, v in {"GRPO_CONFIG": str(ROOT / "examples" / "smoke.yaml"), "GRPO_STORE__URI": str(tmp_path / "runs"),
                 "GRPO_WORK_DIR": str(tmp_path / "work"), "GRPO_TRAIN__EXTRA__EPSILON_HIGH": "1e400",
                 "GRPO_TRAIN__EXTRA__DELTA": "nan"}.items():
        monkeypatch.setenv(k, v)
    assert cli.main(["check", "--log_format=text"]) == 2
    err = capsys.readouterr().err
    assert "epsilon_high='1e400' does not fit GRPOConfig's epsilon_high (float | None): Input should be a finite" in err
    assert "delta='nan' does not fit GRPOConfig's delta (float | None): Input should be a finite" in err
