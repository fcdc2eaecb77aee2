"""The run as an ordered list of named, idempotent stages.

Each stage reads its inputs from the run store and writes its outputs there, then a done-marker
`stages/<name>.json` (with a summary) is written last. A restarted job skips every stage that has
a marker and goes straight to the first unfinished one; a stage interrupted half way simply runs
again (the train stage resumes from its newest complete checkpoint).

The main process holds the run's lease while it runs them (grpo_job/store/lease.py): a second
process of the same run exits 1 instead of writing beside it.

Stopping (SIGTERM, deadline; grpo_job/stopping.py) is checked before each stage: a stop asked for
during a stage lets that stage finish within the grace budget, then the run exits 75 before the
next. After `train` (a stage with `fresh_process_after`) the later stages run in a fresh process
when the caller passes `restart` (the CLI re-executes itself), so the GPU memory that training and
vLLM held is handed back to the driver before evaluation loads its model.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from grpo_job import distributed, machine, resume, stopping
from grpo_job.context import RunContext, StoreKeys, marker_key, open_run
from grpo_job.errors import OutOfMemoryLater, SettingsError, StoppedEarly, TrainingUnhealthy
from grpo_job.preflight import restart_plan
from grpo_job.settings import JobSettings
from grpo_job.stages import Stage, stages
from grpo_job.store import lease

log = logging.getLogger(__name__)


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
        StoreKeys.SETTINGS,
        json.dumps({"fingerprint": ctx.settings.fingerprint(), "settings": ctx.settings.redacted()}, indent=1),
    )


def run(settings: JobSettings, only: list[Stage] | None = None,
        restart: Callable[[], None] | None = None, ctx: RunContext | None = None) -> dict[str, dict[str, Any]]:
    """Run every enabled stage in order, skipping finished ones. Returns each stage's summary.

    `restart` (it does not return: e.g. `os.execv` of the same command) is called after a
    `fresh_process_after` stage ran here when stages are left, in a single-process launch only.
    Raises StoppedEarly when a stop was asked for before a stage; an out-of-memory error raises
    SettingsError before any training step was made, OutOfMemoryLater after.

    In a multi-process launch the main process runs every stage and writes every marker; the others
    wait for the main's markers up to the first `every_process` stage, run those stages with it, and
    return after the last one (see grpo_job/distributed.py). `ctx`: the run already opened for these
    settings (`open_run`, as `cli` does for its plan), else opened here."""
    machine.probe()  # the process may have started elsewhere than the CLI (tests, notebooks)
    ctx = open_run(settings) if ctx is None else ctx
    launch = ctx.launch
    ctx.store.check_reachable()
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    log.info("run %s: store %s%s", ctx.run_id, ctx.store.uri, f"; {launch}" if launch.multi else "",
             extra={"run_id": ctx.run_id})
    # the lease before anything is written: a second process of this run_id stops here (store/lease.py)
    held = lease.acquire(ctx.store, settings.store.lease_seconds) if launch.is_main and settings.store.lease_seconds else None
    if held is not None:
        held.start_renewing()
    try:
        return _run_stages(ctx, only, restart)
    finally:  # not reached through `restart` (an exec): the same process takes its lease back
        if held is not None:
            held.release()


def _run_stages(ctx: RunContext, only: list[Stage] | None, restart: Callable[[], None] | None) -> dict[str, dict[str, Any]]:
    settings, launch = ctx.settings, ctx.launch
    plan = restart_plan(ctx, stages())
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
        except TrainingUnhealthy as e:
            if launch.is_main and settings.report.enabled:
                _report_stop(ctx, f"The run stopped in stage {stage.name} with exit 3: {e}")
            raise
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


def _report_stop(ctx: RunContext, ended: str) -> None:
    """report.md for a run a health guard stopped, saying so: its reward curves are what show why. No marker:
    the report stage still runs if the run goes on. A report that cannot be written is logged, never raised:
    the guard's exit 3 is the run's outcome."""
    from grpo_job.artifacts import report

    try:
        report.run(ctx, ended=ended)
    except Exception as e:  # the stop is reported by the caller's raise
        log.warning("report of the stopped run not written: %s: %s", type(e).__name__, e)


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
