"""The schema of the settings, gathered: one model per concern, each field typed, constrained and
documented, defined in the module of its concern:

- `base`: the `Section` base model and the S3 URI check every section shares.
- `model`: `model` (the base model, its loading, the engine) and `lora`.
- `data`: `data` (dataset, columns, prompt format) and the forms of a data path.
- `rewards`: the values of the `rewards` setting (weights, entries with arguments, built-in names).
- `training`: `train` (GRPOConfig's hyper-parameters) and `distributed`.
- `outputs`: `store`, `stop`, `export` and `hub`.
- `evaluation`: `evaluation`, `health` and `report`.
- `root` holds `JobSettings`, the whole job, with these as its sections.

These models are pure: validating them reads the values alone (no files, packages, network or GPU),
so the same settings validate on a CI runner without the ML stack and in the pod. What depends on the
machine that runs the job (a data file exists, a reward module imports, a tracker is installed,
`train.extra` names GRPOConfig fields) is checked by `grpo_job.settings.environment`, in `check` and
`run` only. Field names are the names of the library arguments they feed (GRPOConfig, LoraConfig,
`datasets.load_dataset`, Unsloth's `from_pretrained`).
"""

from grpo_job.settings.base import Section, check_s3_uri
from grpo_job.settings.data import (
    BUILTIN_DATASETS,
    DATA_FILE_SUFFIXES,
    DEFAULT_SYSTEM_PROMPT,
    DataSettings,
    FewShotExample,
    eval_fraction_applies,
    is_data_file,
    is_local_data_path,
)
from grpo_job.settings.evaluation import EvaluationSettings, HealthSettings, ReportSettings
from grpo_job.settings.model import LoraSettings, ModelSettings
from grpo_job.settings.outputs import ExportSettings, HubSettings, StopSettings, StoreSettings
from grpo_job.settings.rewards import BUILTIN_REWARDS, RewardEntry, RewardValue
from grpo_job.settings.training import DistributedSettings, TrainSettings

__all__ = [
    "BUILTIN_DATASETS", "BUILTIN_REWARDS", "DATA_FILE_SUFFIXES", "DEFAULT_SYSTEM_PROMPT", "DataSettings",
    "DistributedSettings", "EvaluationSettings", "ExportSettings", "FewShotExample", "HealthSettings", "HubSettings",
    "LoraSettings", "ModelSettings", "ReportSettings", "RewardEntry", "RewardValue", "Section", "StopSettings",
    "StoreSettings", "TrainSettings", "check_s3_uri", "eval_fraction_applies", "is_data_file", "is_local_data_path",
]
