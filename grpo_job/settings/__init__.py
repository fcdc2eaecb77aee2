"""Every setting of the job, validated before anything heavy is imported.

- the sections, one model per concern, in modules by concern: `model` (model, lora), `data`, `rewards`
  (the values of `rewards`), `training` (train, distributed), `outputs` (store, stop, export, hub),
  `evaluation` (evaluation, health, report), all on `base` (the `Section` model, the S3 URI check).
- `root`: the root `JobSettings`, the whole job, with those sections.
- `rules`: cross-field rules mirroring TRL's invariants, and warnings for legal but risky values.
- `sources`: the sources the root reads (CLI, environment, YAML, defaults) and how they are layered.
- `loading`: `load_settings`, the YAML file, and errors worded for the user.
- `provenance`: where each value came from (its GRPO_* variable, the source that set it, dict keys a higher
  source dropped), for those errors and warnings.
- `environment`: checks against the machine the job runs on (files, modules, GRPOConfig names).

The section models are pure: validating them reads the values alone (no files, packages, network or
GPU), so the same settings validate on a CI runner without the ML stack and in the pod. What depends on
the machine (a data file exists, a reward module imports, a tracker is installed, `train.extra` names
GRPOConfig fields) is checked by `environment`, in `check` and `run` only. Field names are the names of
the library arguments they feed (GRPOConfig, LoraConfig, `datasets.load_dataset`, Unsloth's `from_pretrained`).
"""

from grpo_job.settings.base import check_s3_uri
from grpo_job.settings.data import DEFAULT_SYSTEM_PROMPT, DataSettings
from grpo_job.settings.evaluation import EvaluationSettings, HealthSettings, ReportSettings
from grpo_job.settings.loading import CONFIG_ENV, format_validation_error, load_settings, unknown_env_names
from grpo_job.settings.model import LoraSettings, ModelSettings
from grpo_job.settings.outputs import ExportSettings, HubSettings, StopSettings, StoreSettings
from grpo_job.settings.provenance import env_var_name
from grpo_job.settings.root import JobSettings
from grpo_job.settings.rules import deferred_world_checks
from grpo_job.settings.sources import ENV_PREFIX, read_yaml
from grpo_job.settings.training import DistributedSettings, TrainSettings

__all__ = [
    "CONFIG_ENV", "DEFAULT_SYSTEM_PROMPT", "ENV_PREFIX", "DataSettings", "DistributedSettings", "EvaluationSettings",
    "ExportSettings", "HealthSettings", "HubSettings", "JobSettings", "LoraSettings", "ModelSettings",
    "ReportSettings", "StopSettings", "StoreSettings", "TrainSettings", "check_s3_uri", "deferred_world_checks",
    "env_var_name", "format_validation_error", "load_settings", "read_yaml", "unknown_env_names",
]
