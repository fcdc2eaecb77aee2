"""How the run is measured and watched: before/after evaluation (`evaluation`), the reward-health
preflight and guards (`health`) and the report with optional trackers (`report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from grpo_job.settings.base import Section
from grpo_job.settings.data import DATA_FILE_SUFFIXES, is_local_data_path, saved_dataset


class EvaluationSettings(Section):
    """The evaluate_base / evaluate_trained stages: greedy answers on held-out prompts, scored with the
    same extraction as the correctness reward."""

    enabled: bool = True
    """Evaluate the base model before training and base + adapter after it."""

    max_samples: int | None = Field(None, ge=1)
    """Examples to evaluate; None means the whole held-out split on a GPU and `cpu_samples` on CPU."""

    cpu_samples: int = Field(8, ge=1)
    """Examples evaluated on CPU when `max_samples` is None (CPU generation is slow)."""

    max_new_tokens: int | None = Field(None, ge=1)
    """Longest generated answer in tokens; None uses train.max_completion_length."""

    batch_size: int = Field(32, ge=1)
    """Prompts generated together (left-padded); lower it if evaluation runs out of GPU memory."""

    data_path: str | None = None
    """A local .jsonl/.json/.parquet/.csv file of raw rows (mapped by data.task) to evaluate on
    instead of the held-out split, e.g. GSM8K's test split when training from a local train file.
    Only a file on the machine: not an s3:// object, a Hub dataset or builtin:NAME."""

    @field_validator("data_path")
    @classmethod
    def _local_file(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            return None  # GRPO_EVALUATION__DATA_PATH= (empty): no file, as null
        if v is None or (not v.startswith(("s3://", "builtin:")) and v.lower().endswith(DATA_FILE_SUFFIXES)):
            return v
        if saved_dataset(v) or (is_local_data_path(v) and not Path(v.removeprefix("file://")).is_file()):
            # a folder saved by datasets, or a path not there yet (a CI runner validating a pod's settings):
            # settings.environment says where the job runs whether it exists and what it holds
            return v
        if v.startswith("s3://"):
            instead = ("copy the object into the pod first (e.g. `aws s3 cp` in an init container) and give its "
                       "path, or unset it to evaluate on the rows data.eval_fraction holds out of data.path")
        elif v.startswith("builtin:"):
            instead = ("a built-in dataset is evaluated on its own test split: set data.path to it and leave "
                       "evaluation.data_path unset")
        else:
            instead = ("for a Hub dataset's split, train on that dataset (data.path) and name the split in "
                       "data.eval_split; for a local file, give its path with its extension")
        raise ValueError(f"{v!r} is not a local data file: evaluation.data_path takes the path of a local "
                         f"{'/'.join(DATA_FILE_SUFFIXES)} file on this machine, or a folder of one split written by "
                         f"datasets' save_to_disk; {instead}")


class HealthSettings(Section):
    """Reward-health preflight and guards that stop a run that cannot learn (exit code 3)."""

    preflight_samples: int = Field(8, ge=0)
    """Completions sampled from the base model before training and scored by every reward: a reward
    that raises or returns the wrong number of scores fails the run (exit 2). 0 skips the preflight."""

    zero_std_steps: int = Field(20, ge=0)
    """Stop after this many optimizer steps in a row in which every group had zero reward variance
    (TRL's `frac_reward_zero_std` = 1: all advantages are 0, nothing is learned). 0 disables."""

    zero_reward_steps: int = Field(100, ge=0)
    """Stop after this many optimizer steps in a row in which one reward's mean is exactly 0 (its
    regex never matches, its weight is wasted). 0 disables."""

    zero_reward_exempt: list[str] = Field(default_factory=list)
    """Rewards (names as in `rewards`) allowed to stay at 0, e.g. `correctness` for a model too small
    to solve anything yet while a format reward gives the signal."""

    stop_on_nan: bool = True
    """Stop at the first logged step whose loss or grad norm is NaN or infinite."""

    reward_time_limit: float = Field(120.0, gt=0)
    """Seconds one call of a reward (one batch of completions) may take, in `check`'s dry call, the preflight
    and training; longer: the reward is stopped and the run fails naming it (exit 2 before training)."""


class ReportSettings(Section):
    """The report stage (report/ in the run store) and optional experiment trackers."""

    enabled: bool = True
    """Write report/report.md with before/after evaluation, plots of the reward curves and
    completion length, and the main settings."""

    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list)
    """Also send the trainer's metrics to these trackers (GRPOConfig `report_to`); each needs its
    package installed and its usual environment variables (WANDB_API_KEY, MLFLOW_TRACKING_URI…)."""
