"""Every setting of the job, validated before anything heavy is imported.

- `sections`: the schema, one model per concern (model, lora, data, train, store, ...).
- `rules`: cross-field rules mirroring TRL's invariants, and warnings for legal but risky values.
- `loading`: the root `JobSettings`, its sources (CLI, environment, YAML, defaults) and error wording.
"""

from grpo_job.settings.base import check_s3_uri
from grpo_job.settings.data import DEFAULT_SYSTEM_PROMPT, DataSettings
from grpo_job.settings.evaluation import EvaluationSettings, HealthSettings, ReportSettings
from grpo_job.settings.loading import (
    CONFIG_ENV,
    ENV_PREFIX,
    JobSettings,
    env_var_name,
    format_validation_error,
    load_settings,
    read_yaml,
    unknown_env_names,
)
from grpo_job.settings.model import LoraSettings, ModelSettings
from grpo_job.settings.outputs import ExportSettings, HubSettings, StopSettings, StoreSettings
from grpo_job.settings.rules import deferred_world_checks
from grpo_job.settings.training import DistributedSettings, TrainSettings

__all__ = [
    "CONFIG_ENV", "DEFAULT_SYSTEM_PROMPT", "ENV_PREFIX", "DataSettings", "DistributedSettings", "EvaluationSettings",
    "ExportSettings", "HealthSettings", "HubSettings", "JobSettings", "LoraSettings", "ModelSettings",
    "ReportSettings", "StopSettings", "StoreSettings", "TrainSettings", "check_s3_uri", "deferred_world_checks",
    "env_var_name", "format_validation_error", "load_settings", "read_yaml", "unknown_env_names",
]
