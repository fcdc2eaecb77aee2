"""The run's context: what a run decides once, when it opens, and every stage reads.

`RunContext` sits below the stages: the runner (`grpo_job.pipeline`) opens it and passes it to each stage
body, and a stage body imports this module, never the runner. It holds the settings, the run store and
its layout (`StoreKeys`: the keys stages hand each other through the store), the process's place in a
launch, and, resolved on first use and then kept for the run, the training engine and the rewards built
from the settings (function, weight, the name TRL logs it under). Nothing here imports an ML library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from grpo_job import distributed, stopping
from grpo_job.settings import JobSettings
from grpo_job.store import RunStore, open_store


class StoreKeys:
    """The run store's layout: the keys one stage writes and a later one (or a restarted job) reads."""

    SETTINGS = "settings.json"  # the settings of the last start (grpo_job/resume.py compares them)
    TRAIN_ROWS = "data/train.jsonl"  # prepare_data -> preflight, train
    HELD_OUT_ROWS = "data/eval.jsonl"  # prepare_data -> the evaluate stages
    METRICS = "metrics.jsonl"  # one record per logged training step
    ADAPTER = "adapter"  # the trained LoRA (folder)
    CHECKPOINTS = "checkpoints"  # checkpoint-<step>/ folders
    MERGED = "merged"  # base + LoRA, 16-bit (folder)
    GGUF = "gguf"  # the exported GGUF files (folder)
    GGUF_VERIFY = "gguf/verify.json"  # verify_gguf -> publish (the model card's check of each GGUF)
    REPORT = "report"  # plots and report.md (folder)
    REPORT_MD = "report/report.md"  # report -> the closing line

    @staticmethod
    def marker(stage: str) -> str:
        """The done-marker of a stage: its summary, written last."""
        return f"stages/{stage}.json"

    @staticmethod
    def gguf_file(quant: str) -> str:
        """An exported GGUF file (`q8_0`, `f16`...): export_gguf -> verify_gguf, publish."""
        return f"{StoreKeys.GGUF}/model-{quant}.gguf"

    @staticmethod
    def evaluation(which: str) -> str:
        """An evaluate stage's result (`base` or `trained`)."""
        return f"eval/{which}.json"


def marker_key(name: str) -> str:
    """The done-marker key of stage `name` (`StoreKeys.marker`)."""
    return StoreKeys.marker(name)


@dataclass
class RunContext:
    """One run as the stages see it. `launch`: this process's place (resolved when the run opens)."""

    settings: JobSettings
    store: RunStore
    run_id: str
    work_dir: Path  # local scratch for this run
    launch: distributed.Launch = field(default_factory=distributed.current)
    keys: type[StoreKeys] = StoreKeys

    @property
    def cache_dir(self) -> Path:
        return self.settings.resolved_cache_dir()

    @property
    def stop(self) -> stopping.StopControl | None:
        """The process's stop control (SIGTERM, deadline), when one is installed."""
        return stopping.current()

    def stage_summary(self, name: str) -> dict[str, Any] | None:
        key = marker_key(name)
        return self.store.read_json(key) if self.store.exists(key) else None

    @cached_property
    def engine(self) -> str:
        """The training engine (`trl` or `unsloth`) for `model.engine`, picked once for the run."""
        from grpo_job.training import engines

        return engines.pick_engine(self.settings)

    @cached_property
    def rewards(self) -> dict[str, Any]:
        """The rewards of `rewards`, built once for the run: settings name -> the function TRL calls
        (`grpo_job.rewards.build_all`, clashing TRL names made distinct by `distinct_names`; raises SettingsError
        for a reward that cannot be built)."""
        from grpo_job import rewards

        return rewards.distinct_names(rewards.build_all(self.settings.rewards, self.settings.data.answer_type))

    @cached_property
    def reward_log_names(self) -> dict[str, str]:
        """Settings name -> the name TRL logs the reward under (`rewards/<name>/mean`)."""
        from grpo_job import rewards

        return rewards.log_names(self.rewards)


def open_run(settings: JobSettings) -> RunContext:
    """The run these settings name: its store (read-only in a launch's other processes), its scratch
    folder and this process's place, resolved once."""
    run_id = settings.resolved_run_id()
    store = open_store(settings.store.uri, run_id)
    launch = distributed.current()
    if not launch.is_main:
        store = distributed.ReadOnlyStore(store, f"process {launch}")
    work_dir = settings.work_dir / "runs" / run_id
    return RunContext(settings=settings, store=store, run_id=run_id, work_dir=work_dir, launch=launch)
