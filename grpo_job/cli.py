"""Command line: `run` (the container's default), `check` (validate and show the plan) and
`launch` (several GPUs: one `run` per GPU under torchrun, see grpo_job/launch.py).

    python entrypoint.py run    [--config FILE] [--section.field=value ...]
    python entrypoint.py check  [--config FILE] [--section.field=value ...]
    python entrypoint.py launch [--config FILE] [--section.field=value ...]

Exit codes are documented in grpo_job/errors.py. Nothing here imports an ML library: settings and the
plan are checked first, and torch/transformers are imported only inside the stages that need them.

`run` installs one stop control (SIGTERM, deadline) for all stages, re-executes itself after `train`
so the later stages start with the GPU memory handed back, and ends with a closing log line: the run
id, the exit code and its meaning, and where the report, adapter, merged model and GGUF files are.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import sys

from grpo_job import errors, machine, rewards, stopping
from grpo_job.context import StoreKeys, open_run
from grpo_job.errors import JobError, SettingsError
from grpo_job.settings import JobSettings, load_settings
from grpo_job.settings.provenance import where_set

CLOSING_STORE_SECONDS = 15.0  # what the closing line waits for the store to list the run's artifacts

log = logging.getLogger("job")


def _print_plan(p: dict, settings: JobSettings) -> None:
    print(f"run id : {p['run_id']}\nstore  : {p['store']}\nengine : {p['engine']} (GPU visible: {p['gpu']})")
    print(f"model  : {settings.model.name_or_path} -> {p['model']}")
    print(f"data   : {p['data']} (task {settings.data.task})")
    d = p.get("data_report") or {}
    if "train_rows" in d:
        print(f"  prompt <- {d['prompt_column']!r}, answer <- {d['answer_column']!r} "
              f"({data_task_about(settings)}); rewards get columns {d['columns']}")
        if d.get("columns_note"):
            print(f"  columns: {d['columns_note']}")
        held = d.get("unparsable_held_out_answers")
        unparsable = ("not checked: no correctness reward and no evaluation compare them"
                      if d["unparsable_answers"] is None else d["unparsable_answers"])
        print(f"  {d['train_rows']} train rows, {d['eval_rows']} held-out rows; reference answers the checker "
              f"cannot parse (answer_type {settings.data.answer_type}): {unparsable}"
              f"{'' if held is None else f', held out {held}'}; "
              f"chat template: {d['chat_template']}; prompt format: {d.get('prompt_format', 'resolved at prepare_data')}")
        if d.get("prompt_tokens_max") is not None:
            print(f"  prompts longer than max_prompt_length={settings.train.max_prompt_length}: {d['too_long']} "
                  f"(longest {d['prompt_tokens_max']} tokens)")
        else:
            print("  prompt lengths: counted at prepare_data (no tokenizer.json here yet)")
    if "evaluation_rows" in d:
        print(f"  evaluation: {d['evaluation_rows']} rows from evaluation.data_path {settings.evaluation.data_path} "
              "(instead of the held-out rows)")
    print("rewards: " + ", ".join(f"{k} x{rewards.weight(v):g}" for k, v in p["rewards"].items()))
    if p.get("extra"):  # GRPOConfig's other arguments, as the run passes them (second trial: shown nowhere)
        print(f"extra  : {json.dumps(p['extra'], default=str)}")
    if p.get("sandbox"):  # the code reward runs model-written programs: what confines them
        print(f"sandbox: {p['sandbox']}")
    t = settings.train
    print(
        f"train  : {t.max_steps} steps, lr {t.learning_rate:g} {t.lr_scheduler_type} ({t.optim}), loss {t.loss_type}, "
        f"beta {t.beta:g}, {t.num_generations} generations, batch {t.per_device_train_batch_size}x"
        f"{t.gradient_accumulation_steps}, completions <= {t.max_completion_length} tokens, save every {t.save_steps}"
    )
    for note in p["restart"]:
        print(f"restart: {note}")
    if p.get("resume_from_step") is not None:
        print(f"resume : training resumes from checkpoint-{p['resume_from_step']} (weights, optimizer, schedule, step)")
    if p.get("lease"):
        print(f"lease  : {p['lease']}")
    for s in p["stages"]:
        print(f"  {s['will']:8s} {s['stage']:14s} {s['about']}")


def data_task_about(settings: JobSettings) -> str:
    from grpo_job import data

    return data.TASKS[settings.data.task].about


class _Once(argparse.Action):
    """An option given once: argparse keeps the last of several silently, and a second `--config` would drop
    the first file's settings (new-user trial)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} given twice ({getattr(namespace, self.dest)!r} and {values!r}): the job reads "
                         "one settings file; merge them, or set the second file's values as --section.field=value")
        setattr(namespace, self.dest, values)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="entrypoint.py",
        description="GRPO training job. Settings: GRPO_* environment variables, --config YAML, --section.field=value.",
        epilog="Exit codes: 0 done, 1 failure, 2 invalid settings, 3 stopped by a health guard or an unchanged "
        "adapter, 4 out of memory after training made progress (retry), 75 stopped early after saving (retry).",
    )
    p.add_argument("command", choices=["run", "check", "launch"],
                   help="run the job; only validate and show the plan; or launch one run per GPU through torchrun")
    p.add_argument("--config", action=_Once, help="YAML settings file (also GRPO_CONFIG); one file")
    p.add_argument("--print-settings", action="store_true", help="with check: print the resolved settings as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args, overrides = build_parser().parse_known_args(argv)
    if args.command == "launch":
        from grpo_job import launch

        return launch.main(args.config, overrides)
    code = _main(args, overrides, restart=_reexec if argv is None else None)
    if args.command == "run":
        from grpo_job import launch

        launch.record_exit(code)  # for `entrypoint.py launch`, which reports the job's code, not torchrun's
    return code


def _reexec() -> None:
    """Replace this process with a fresh run of the same command (same PID: Kubernetes, tini and
    torchrun see one process). SIGTERM stays blocked across the exec and is delivered once the new
    process has its handler (stopping.StopControl.install)."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "close_line"):  # a partial line held by the JSON log streams
            stream.close_line()
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        stream.flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def closing_line(code: int, settings: JobSettings, ask_store: bool = True) -> None:
    """The last log line of a `run`: run id, exit code and meaning, and the store paths of the report,
    adapter, merged model and GGUF files that exist. The store gets CLOSING_STORE_SECONDS to answer (trial: a frozen
    store held the process after its error, with no closing line); with `ask_store` False (the watchdog's exit, when
    the store may be what does not answer) it is not asked."""

    run_id = settings.resolved_run_id()
    where: dict[str, object] = {}
    if not ask_store:
        where["store"] = "not asked (the grace budget ran out)"
    else:
        found: dict[str, object] = {}

        def ask() -> None:
            try:
                found.update(_artifacts(open_run(settings).store))
            except Exception as e:  # the closing line must still be written: say why the paths are missing
                found["store_error"] = f"{type(e).__name__}: {e}"

        where = dict(found) if stopping.finishes_within(CLOSING_STORE_SECONDS, ask, name="closing-line") else {
            "store_error": f"the store did not answer within {CLOSING_STORE_SECONDS:g} s"}
    fields = _exit_fields(code)
    text = "; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in where.items()) or "no artifacts"
    log.log(logging.INFO if code == errors.EXIT_OK else logging.WARNING, "run %s ended: exit %d (%s); %s",
            run_id, code, fields["meaning"], text, extra={"run_id": run_id, **fields, "artifacts": where})


def _artifacts(store) -> dict[str, object]:
    """The store paths of the run's report, adapter, merged model and GGUF files that exist."""
    where: dict[str, object] = {}
    wanted = {"report": StoreKeys.REPORT_MD, "adapter": f"{StoreKeys.ADAPTER}/adapter_config.json",
              "merged_model": f"{StoreKeys.MERGED}/config.json"}
    for name, key in wanted.items():
        if store.exists(key):
            where[name] = f"{store.uri.rstrip('/')}/{key.rsplit('/', 1)[0] if name != 'report' else key}"
    if ggufs := [f"{store.uri.rstrip('/')}/{k}" for k in store.list(f"{StoreKeys.GGUF}/") if k.endswith(".gguf")]:
        where["gguf"] = ggufs
    return where


def _main(args: argparse.Namespace, overrides: list[str], restart=None) -> int:
    from grpo_job import logs

    try:
        settings = load_settings(args.config, overrides)
    except SettingsError as e:
        if logs.resolve_format(_asked_log_format(args.config, overrides)) == "json":
            # the pod's (or CI's) log collector reads one JSON object per line, this first line included
            logs.setup("json")
            log.error("error: %s", e, extra=_exit_fields(errors.EXIT_INVALID))
        else:
            print(f"error: {e}", file=sys.stderr)
        return errors.EXIT_INVALID

    # before anything imports torch (the checks below import TRL's GRPOConfig for `train.extra`)
    found = machine.probe()
    fmt = logs.setup(settings.log_format)
    if found.cpu_threads:
        log.info("torch CPU threads: %d, the container's CPU limit (OMP_NUM_THREADS; set it to choose)",
                 found.cpu_threads)
    if fmt == "json" and args.command == "run":
        logs.route_streams()  # one JSON object per line, library prints and warnings included
    def explain(message: str) -> str:  # where this run set the settings an error names (file, flag)
        return where_set(message, args.config, overrides)

    unnote = logs.note_warnings(explain)  # warnings name variables too (trial: a YAML user told to set GRPO_...)
    try:
        for w in settings.warnings():
            log.warning("settings: %s", w)
        if args.command == "check":
            return _guarded(lambda: _check(args, settings, fmt), explain)
        stop = stopping.install_for_run(settings.stop)  # SIGTERM and the deadline, for every stage
        stop.on_hard_exit = lambda code: closing_line(code, settings, ask_store=False)
        try:
            code = _guarded(lambda: _run(settings, restart), explain)
        finally:
            stopping.uninstall_run()
        closing_line(code, settings)
        return code
    finally:
        unnote()
        logs.restore_streams()


def _asked_log_format(config: str | None, overrides: list[str]) -> str:
    """`log_format` as the settings that did not load ask for it, as far as each source can be read:
    `--log_format`, then GRPO_LOG_FORMAT, then the YAML file's `log_format` key. `text` or `json`
    (any case, spaces stripped), else `auto`: an invalid value (`jsn`, empty, `null`) may be what
    failed to load, and off a terminal the error line is then JSON like every other line of the job."""
    from grpo_job.settings.sources import config_variable, read_yaml

    asked = None
    for i, arg in enumerate(overrides):
        if arg.startswith("--log_format="):
            asked = arg.split("=", 1)[1]
        elif arg == "--log_format" and i + 1 < len(overrides):
            asked = overrides[i + 1]
    if asked is None:
        asked = os.environ.get("GRPO_LOG_FORMAT")
    path = config or config_variable()
    if asked is None and path:
        try:
            asked = read_yaml(path).get("log_format")
        except SettingsError:  # the file itself is what failed to load: its key cannot be read either
            asked = None
    value = asked.strip().lower() if isinstance(asked, str) else ""
    return value if value in ("text", "json") else "auto"


def _check(args: argparse.Namespace, settings: JobSettings, fmt: str) -> int:
    """The plan on stdout: text for a person, one JSON object in JSON mode (every line of the job is one then;
    a CI step can read it: `check ... | jq .stages`), the resolved settings in it with `--print-settings`."""
    from grpo_job import preflight, stages

    try:
        p = preflight.plan(settings, stages.stages())
    except errors.SettingsError:
        if args.print_settings:  # the settings are valid; what they meet is not: show them beside the problems (trial)
            print(json.dumps({"settings": settings.redacted()} if fmt == "json" else settings.redacted(),
                             indent=None if fmt == "json" else 1, default=str), flush=True)
        raise
    if "code" in settings.rewards:  # the code reward runs model-written programs: what confines them, in both
        from grpo_job import sandbox  # formats (a probe program: `check` only, not every run's start)

        p["sandbox"] = sandbox.describe()
    if fmt == "json":
        redacted = settings.redacted()
        # the train section as the text plan's `train` line gives it (trial: JSON mode, the default, had none); its
        # `extra` is the plan's own, as GRPOConfig gets it
        train = {k: v for k, v in redacted["train"].items() if k != "extra"}
        out = {**p, "rewards": redacted["rewards"], "train": train,
               **({"settings": redacted} if args.print_settings else {})}
        print(json.dumps(out, default=str), flush=True)
        return errors.EXIT_OK
    if args.print_settings:
        print(json.dumps(settings.redacted(), indent=1, default=str))
    _print_plan(p, settings)
    return errors.EXIT_OK


def _run(settings: JobSettings, restart) -> int:
    from grpo_job import pipeline, preflight, stages

    ctx = open_run(settings)
    preflight.plan(settings, stages.stages(), inspect_data=False, ctx=ctx)  # same checks as `check`; the data's in prepare_data, the first stage
    pipeline.run(settings, restart=restart, ctx=ctx)
    return errors.EXIT_OK


def _exit_fields(code: int) -> dict[str, object]:
    """The fields a JSON log record gets for an exit code (the contract with Kubernetes: errors.py)."""
    return {"exit_code": code, "meaning": errors.MEANING.get(code, "unknown")}


def _guarded(body, explain=str) -> int:
    """`body()`'s exit code, or the code of the error it raised (logged as a message, not a traceback;
    `explain` adds where the settings a SettingsError names were set)."""
    try:
        return body()
    except JobError as e:  # SettingsError too
        # the code on the error's own record too: `check` has no closing line to carry it
        log.error("%s", explain(str(e)) if isinstance(e, SettingsError) else e, extra=_exit_fields(e.exit_code))
        return e.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return errors.EXIT_FAILURE
    except Exception as e:
        from grpo_job.training.health import oom_message

        if (msg := oom_message(e)) is not None:
            # outside a stage (stages classify their own): the same settings would run out again
            log.error("%s", msg)
            return errors.EXIT_INVALID
        if (msg := disk_full_message(e)) is not None:
            log.error("%s", msg, extra=_exit_fields(errors.EXIT_FAILURE))
            return errors.EXIT_FAILURE
        log.exception("the job failed")
        return errors.EXIT_FAILURE


def disk_full_message(e: BaseException) -> str | None:
    """One line for a full disk or quota (ENOSPC, EDQUOT) anywhere in `e`'s chain, naming the file and the
    settings that place the job's files; None for any other error. Exit 1: a new pod may have the space,
    and what was saved before is intact (stores write whole objects)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:  # a chain may loop (an error raised again in its own handler)
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {e.filename}" if e.filename else ""
            return (f"no space left on the device{where} ({e.strerror}): free space there, or give the job a larger "
                    "volume: GRPO_STORE__URI (the run's store), GRPO_WORK_DIR (trainer output before upload), "
                    "GRPO_CACHE_DIR (dequantized models, data files); the store's finished files are intact")
        e = e.__cause__ or e.__context__
    return None
