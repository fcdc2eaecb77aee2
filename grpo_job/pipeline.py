"""The run as an ordered list of named, idempotent stages.

Each stage reads its inputs from the run store and writes its outputs there, then a done-marker
`stages/<name>.json` (with a summary) is written last. A restarted job skips every stage that has
a marker and goes straight to the first unfinished one; a stage interrupted half way simply runs
again (the train stage resumes from its newest complete checkpoint).

Stopping (SIGTERM, deadline; grpo_job/stopping.py) is checked before each stage: a stop asked for
during a stage lets that stage finish within the grace budget, then the run exits 75 before the
next. After `train` (a stage with `fresh_process_after`) the later stages run in a fresh process
when the caller passes `restart` (the CLI re-executes itself), so the GPU memory that training and
vLLM held is handed back to the driver before evaluation loads its model.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpo_job import data as data_mod
from grpo_job import distributed, resume, stopping
from grpo_job.errors import OutOfMemoryLater, SettingsError, StoppedEarly
from grpo_job.settings import JobSettings
from grpo_job.store import RunStore, checkpoints, open_store
from grpo_job.training import engines

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    settings: JobSettings
    store: RunStore
    run_id: str
    work_dir: Path  # local scratch for this run

    @property
    def cache_dir(self) -> Path:
        return self.settings.work_dir / "cache"

    def stage_summary(self, name: str) -> dict[str, Any] | None:
        key = marker_key(name)
        return json.loads(self.store.read_text(key)) if self.store.exists(key) else None


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[RunContext], dict[str, Any]]
    enabled: Callable[[JobSettings], bool] = lambda s: True
    about: str = ""
    every_process: bool = False  # run by every process of a multi-process launch, not the main one alone
    fresh_process_after: bool = False  # later stages run in a new process (GPU memory handed back)


def marker_key(name: str) -> str:
    return f"stages/{name}.json"


# ---------------------------------------------------------------- stage bodies kept here (small)
def load_and_check_data(s: JobSettings, cache_dir: Path, template: Callable[[], Any]) -> tuple[list, list, dict]:
    """Load and map the data, then check it before any model is loaded: the rows held out (a warning
    worded for the evaluation settings), the columns each reward asks for, the reference answers, (when
    `template()` gives the model's chat template, else None) prompt rendering and lengths, a dry call of
    every reward on synthetic completions of a few rows, and the rows of `evaluation.data_path` when it
    is evaluated. (train rows, held-out rows, summary); raises SettingsError."""
    from grpo_job import rewards
    from grpo_job.training import health

    train, heldout, summary = data_mod.prepare(s.data, cache_dir)
    note = data_mod.hold_out_note(s.data, s.evaluation, summary["source_rows"]["train"],
                                  summary["source_rows"]["held_out"])
    if note:
        summary["warnings"] = [note]
        log.warning("data: %s", note)
    built = rewards.build_all(s.rewards, s.data.answer_type)
    health.check_reward_columns(built, summary["columns"])
    summary.update(data_mod.check_references(train, s.data))
    chat_template = template()
    if chat_template is None:
        summary["chat_template"] = "not checked: the tokenizer is not downloaded yet (prepare_data checks it)"
        health.dry_call(built, train, None, time_limit=s.health.reward_time_limit)
    else:
        from grpo_job import chat

        render = chat.renderer(s, chat_template)
        summary.update(data_mod.check_prompts(train, render, s.data, s.train.max_prompt_length))
        if train:
            chat.check_opening_tag(s, render, train[0]["prompt"])
        health.dry_call(built, render.for_trainer(train), chat_template, time_limit=s.health.reward_time_limit)
    if s.evaluation.enabled and s.evaluation.data_path:
        summary["evaluation_rows"] = len(data_mod.evaluation_rows(s.evaluation.data_path, s.data))
    return train, heldout, summary


def prepare_data(ctx: RunContext) -> dict[str, Any]:
    """Stage body: the checked data (load_and_check_data, with the model's tokenizer) into the store."""
    from grpo_job import chat

    s = ctx.settings
    train, heldout, summary = load_and_check_data(s, ctx.cache_dir, lambda: chat.for_run(s.model, ctx.cache_dir))
    chat.check_context(s, ctx.cache_dir)  # the model's config.json is here now (for_run fetched it)
    ctx.store.write_text("data/train.jsonl", data_mod.to_jsonl(train))
    ctx.store.write_text("data/eval.jsonl", data_mod.to_jsonl(heldout))
    return summary


def _lazy(module: str, func: str, *args: Any) -> Callable[[RunContext], dict[str, Any]]:
    """A stage body that imports its module only when it runs, so listing the stages (and `check`)
    imports no ML library."""

    def body(ctx: RunContext) -> dict[str, Any]:
        return getattr(importlib.import_module(f"grpo_job.{module}"), func)(ctx, *args)

    return body


def stages() -> list[Stage]:
    return [
        Stage("prepare_data", prepare_data, about="load the dataset, map it to prompts, save to the store"),
        Stage("reward_preflight", _lazy("training.health", "preflight"), enabled=lambda s: s.health.preflight_samples > 0,
              about="sample from the base model and run every reward: fail early on a broken one"),
        Stage("evaluate_base", _lazy("evaluate", "run", "base"), enabled=lambda s: s.evaluation.enabled,
              about="greedy accuracy / format / length of the base model on held-out prompts"),
        Stage("train", _lazy("training.train", "run"), every_process=True, fresh_process_after=True,
              about="GRPO with LoRA; checkpoints every save_steps; resumes from the newest"),
        Stage("evaluate_trained", _lazy("evaluate", "run", "trained"), enabled=lambda s: s.evaluation.enabled,
              about="the same evaluation on base + the trained adapter"),
        Stage("report", _lazy("artifacts.report", "run"), enabled=lambda s: s.report.enabled,
              about="plots of rewards and completion length, report.md with before/after, in report/"),
        Stage(
            "merge",
            _lazy("artifacts.export", "merge"),
            enabled=lambda s: s.export.merge or bool(s.export.quantizations) or s.hub.repo_id is not None,
            about="merge the LoRA into a 16-bit copy of the base model",
        ),
        Stage(
            "export_gguf",
            _lazy("artifacts.export", "export_gguf"),
            enabled=lambda s: bool(s.export.quantizations),
            about="GGUF files with llama.cpp's converter and llama-quantize (pinned version)",
        ),
        Stage(
            "verify_gguf",
            _lazy("artifacts.export", "verify_gguf"),
            enabled=lambda s: bool(s.export.quantizations) and s.export.verify,
            about="load each GGUF in llama.cpp; greedy output of f16/q8_0 must match the merged model",
        ),
        Stage(
            "publish",
            _lazy("artifacts.publish", "publish"),
            enabled=lambda s: s.hub.repo_id is not None,
            about="push merged model, GGUF files, adapter and model card to the Hub in one commit",
        ),
    ]


# ---------------------------------------------------------------- running
def open_run(settings: JobSettings) -> RunContext:
    run_id = settings.resolved_run_id()
    store = open_store(settings.store.uri, run_id)
    launch = distributed.current()
    if not launch.is_main:
        store = distributed.ReadOnlyStore(store, f"process {launch}")
    work_dir = settings.work_dir / "runs" / run_id
    return RunContext(settings=settings, store=store, run_id=run_id, work_dir=work_dir)


def restart_plan(ctx: RunContext) -> resume.ResumePlan | None:
    """How the settings differ from the ones this run was last started with, and what that does (see
    grpo_job/resume.py); None for a new run. Reads the store only."""
    if not ctx.store.exists("settings.json"):
        return None
    saved = json.loads(ctx.store.read_text("settings.json"))
    names = [s.name for s in stages()]
    done = {n: ctx.stage_summary(n) for n in names if ctx.store.exists(marker_key(n))}
    return resume.plan(saved.get("settings", {}), ctx.settings.redacted(), stage_names=names, done=done,
                       checkpoint_steps=checkpoints.complete_steps(ctx.store), run_id=ctx.run_id)


def _record_settings(ctx: RunContext, plan: resume.ResumePlan | None) -> None:
    """Apply the restart plan (refuse, or forget the markers of stages to redo) and keep the settings
    of this start with the run. Markers go first: a process that reads the old settings.json computes
    the same plan, one that reads the new one finds the markers gone."""
    if plan is not None:
        if plan.refused:
            raise SettingsError("\n".join(plan.refused))
        for note in plan.notes:
            log.warning("restart: %s", note, extra={"run_id": ctx.run_id})
        for name in plan.redo:
            ctx.store.delete_prefix(marker_key(name))
        if not plan.changes:
            return
    ctx.store.write_text(
        "settings.json",
        json.dumps({"fingerprint": ctx.settings.fingerprint(), "settings": ctx.settings.redacted()}, indent=1),
    )


def run(settings: JobSettings, only: list[Stage] | None = None,
        restart: Callable[[], None] | None = None) -> dict[str, dict[str, Any]]:
    """Run every enabled stage in order, skipping finished ones. Returns each stage's summary.

    `restart` (it does not return: e.g. `os.execv` of the same command) is called after a
    `fresh_process_after` stage ran here when stages are left, in a single-process launch only.
    Raises StoppedEarly when a stop was asked for before a stage; an out-of-memory error raises
    SettingsError before any training step was made, OutOfMemoryLater after.

    In a multi-process launch the main process runs every stage and writes every marker; the others
    wait for the main's markers up to the first `every_process` stage, run those stages with it, and
    return after the last one (see grpo_job/distributed.py)."""
    engines.use_triton_interpreter_without_gpu()
    launch = distributed.current()
    ctx = open_run(settings)
    ctx.store.check_reachable()
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    log.info("run %s: store %s%s", ctx.run_id, ctx.store.uri, f"; {launch}" if launch.multi else "",
             extra={"run_id": ctx.run_id})
    plan = restart_plan(ctx)
    if launch.is_main:
        _record_settings(ctx, plan)
    todo = []
    for stage in only or stages():
        if stage.enabled(settings):
            todo.append(stage)
        else:
            log.info("stage %s: disabled by the settings", stage.name, extra={"stage": stage.name})
    if not launch.is_main:  # the stages after the last shared one are the main's alone
        shared = [i for i, st in enumerate(todo) if st.every_process]
        todo = todo[: shared[-1] + 1] if shared else []
    results: dict[str, dict[str, Any]] = {}
    stop = stopping.current()
    for i, stage in enumerate(todo):
        if stop is not None and (reason := stop.should_stop()):
            raise StoppedEarly(f"stopped ({reason}) before stage {stage.name}; the finished stages have their "
                               "markers: run the job again to continue")
        done = None if plan is not None and stage.name in plan.redo else ctx.stage_summary(stage.name)
        if done is not None:
            log.info("stage %s: already done, skipped", stage.name, extra={"stage": stage.name})
            results[stage.name] = done
            continue
        if not launch.is_main and not stage.every_process:
            distributed.wait_for(ctx.store, marker_key(stage.name), f"stage {stage.name}")
            results[stage.name] = ctx.stage_summary(stage.name) or {}
            continue
        log.info("stage %s: start (%s)", stage.name, stage.about, extra={"stage": stage.name})
        if stop is not None:
            stop.stage = stage.name  # named by the watchdog if the grace budget runs out in it
        t0 = time.monotonic()
        try:
            summary = dict(stage.run(ctx) or {})
        except Exception as e:
            raise _classify_oom(e, ctx) from e
        summary["seconds"] = round(time.monotonic() - t0, 1)
        summary["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if launch.is_main:
            ctx.store.write_text(marker_key(stage.name), json.dumps(summary, indent=1, default=str))
        log.info("stage %s: done in %.1f s", stage.name, summary["seconds"], extra={"stage": stage.name, "summary": summary})
        results[stage.name] = summary
        if (stage.fresh_process_after and restart is not None and not launch.multi and i + 1 < len(todo)
                and not (stop is not None and stop.should_stop())):
            log.info("stage %s: done; the next stages start in a fresh process (memory handed back)", stage.name,
                     extra={"stage": stage.name})
            restart()
    return results


def _classify_oom(e: Exception, ctx: RunContext) -> Exception:
    """An out-of-memory error named by where it happened: before any training step the settings are too
    big (SettingsError, exit 2); after one (or in a later stage) a fresh process may succeed
    (OutOfMemoryLater). Any other error is returned as it is."""
    from grpo_job.training.health import oom_message

    if (msg := oom_message(e)) is None:
        return e
    stop = stopping.current()
    if (stop is not None and stop.steps_done > 0) or ctx.stage_summary("train") is not None:
        return OutOfMemoryLater(f"{msg}. Training had made progress: a fresh process (the retry) may succeed")
    return SettingsError(msg)
