"""The run's stages: an ordered list of named, idempotent steps, each with the settings that enable it.

A stage body takes the run's context (grpo_job/context.py) and returns its summary, which the runner
(grpo_job/pipeline.py) writes as the stage's done-marker. The bodies are the functions below, one per
stage; each imports its module only when it runs, so listing the stages (and `check`) imports no ML
library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grpo_job.context import RunContext
    from grpo_job.settings import JobSettings


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[RunContext], dict[str, Any]]
    enabled: Callable[[JobSettings], bool] = lambda s: True
    about: str = ""
    every_process: bool = False  # run by every process of a multi-process launch, not the main one alone
    fresh_process_after: bool = False  # later stages run in a new process (GPU memory handed back)


# The stage bodies. Each imports its module when it runs, so listing the stages (and `check`) imports no
# ML library; each is the whole call, so a stage's code is one jump away.
def prepare_data(ctx: RunContext) -> dict[str, Any]:
    from grpo_job import preflight

    return preflight.prepare_data(ctx)


def reward_preflight(ctx: RunContext) -> dict[str, Any]:
    from grpo_job.training import health

    return health.preflight(ctx)


def evaluate_base(ctx: RunContext) -> dict[str, Any]:
    from grpo_job import evaluate

    return evaluate.run(ctx, "base")


def train(ctx: RunContext) -> dict[str, Any]:
    from grpo_job.training import train as train_stage

    return train_stage.run(ctx)


def evaluate_trained(ctx: RunContext) -> dict[str, Any]:
    from grpo_job import evaluate

    return evaluate.run(ctx, "trained")


def report(ctx: RunContext) -> dict[str, Any]:
    from grpo_job.artifacts import report as report_stage

    return report_stage.run(ctx)


def merge(ctx: RunContext) -> dict[str, Any]:
    from grpo_job.artifacts import export

    return export.merge(ctx)


def export_gguf(ctx: RunContext) -> dict[str, Any]:
    from grpo_job.artifacts import export

    return export.export_gguf(ctx)


def verify_gguf(ctx: RunContext) -> dict[str, Any]:
    from grpo_job.artifacts import export

    return export.verify_gguf(ctx)


def publish(ctx: RunContext) -> dict[str, Any]:
    from grpo_job.artifacts import publish as publish_stage

    return publish_stage.publish(ctx)


def stages() -> list[Stage]:
    """The run's stages, in the order they run."""
    return [
        Stage("prepare_data", prepare_data, about="load the dataset, map it to prompts, save to the store"),
        Stage("reward_preflight", reward_preflight, enabled=lambda s: s.health.preflight_samples > 0,
              about="sample from the base model and run every reward: fail early on a broken one"),
        Stage("evaluate_base", evaluate_base, enabled=lambda s: s.evaluation.enabled,
              about="every reward's mean over the base model's greedy answers to held-out prompts (and their accuracy when a reward reads the <answer> format)"),
        Stage("train", train, every_process=True, fresh_process_after=True,
              about="GRPO with LoRA; checkpoints every save_steps; resumes from the newest"),
        Stage("evaluate_trained", evaluate_trained, enabled=lambda s: s.evaluation.enabled,
              about="the same evaluation on base + the trained adapter"),
        Stage("report", report, enabled=lambda s: s.report.enabled,
              about="plots of rewards and completion length, report.md with before/after, in report/"),
        Stage(
            "merge",
            merge,
            enabled=lambda s: s.export.merge or bool(s.export.quantizations) or s.hub.repo_id is not None,
            about="merge the LoRA into a 16-bit copy of the base model",
        ),
        Stage(
            "export_gguf",
            export_gguf,
            enabled=lambda s: bool(s.export.quantizations),
            about="GGUF files with llama.cpp's converter and llama-quantize (pinned version)",
        ),
        Stage(
            "verify_gguf",
            verify_gguf,
            enabled=lambda s: bool(s.export.quantizations) and s.export.verify,
            about="load each GGUF in llama.cpp; greedy output of f16/q8_0 must match the merged model",
        ),
        Stage(
            "publish",
            publish,
            enabled=lambda s: s.hub.repo_id is not None,
            about="push merged model, GGUF files, adapter and model card to the Hub in one commit",
        ),
    ]
