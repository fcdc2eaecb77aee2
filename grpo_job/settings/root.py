"""The root settings model, `JobSettings`: the whole job, its sections (defined by concern beside it:
`model`, `data`, `rewards`, `training`, `outputs`, `evaluation`) and its own top-level fields.

Sources, highest precedence first: CLI overrides (`--train.max_steps=5`), environment (`GRPO_`
prefix, `__` for nesting: `GRPO_TRAIN__MAX_STEPS=5`), a YAML file (`--config` or `GRPO_CONFIG`),
then the defaults: the reference recipe's task (Qwen2.5-3B-Instruct in 16-bit, GSM8K, format 0.5 + correctness 2.0,
LoRA r=32 on every projection, 8 generations) at a learning rate a LoRA learns with (1e-4, measured: docs/benchmarks.md;
the seed's 5e-6 barely moved it). How they are layered is
`settings.sources`; building the settings from them, with errors worded for the user, is
`settings.loading`.

Secrets are `SecretStr` read from their standard variables (`HF_TOKEN`); AWS credentials are never
read here at all: boto3's own credential chain finds them.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from grpo_job.settings import rules
from grpo_job.settings.data import DataSettings
from grpo_job.settings.evaluation import EvaluationSettings, HealthSettings, ReportSettings
from grpo_job.settings.model import LoraSettings, ModelSettings
from grpo_job.settings.outputs import ExportSettings, HubSettings, StopSettings, StoreSettings
from grpo_job.settings.rewards import BUILTIN_REWARDS, RewardEntry, RewardValue, unknown_reward_hint
from grpo_job.settings.sources import ENV_PREFIX, NONE_STR, layered_source
from grpo_job.settings.training import DistributedSettings, TrainSettings


class JobSettings(BaseSettings):
    """The whole job. See the module docstring for where values come from."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        nested_model_default_partial_update=True,
        env_parse_none_str=NONE_STR,
    )

    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
    """Stable name of this run in the store; the same id resumes the same run. Kubernetes manifests
    set it from the Job's name. When unset, it is derived from a hash of the settings."""

    log_format: Literal["auto", "text", "json"] = "auto"
    """`text` with a progress bar on a terminal, `json` (one object per line) for log collectors;
    `auto` picks text on a terminal, else json."""

    work_dir: Path = Path("/tmp/grpo-job")
    """Local scratch space: each run's trainer output before upload (`<work_dir>/runs/<run_id>`), and the
    cache unless `cache_dir` is set."""

    cache_dir: Path | None = None
    """Where runs keep what they can share: a GGUF model dequantized once (the model's size in bf16), S3
    data files while they are read. None: `<work_dir>/cache`. Set it apart from `work_dir` to keep the
    cache on a persistent volume and the scratch on fast local disk, or to share one cache between runs
    with their own work dirs (the files are named by their source, written atomically)."""

    model: ModelSettings = ModelSettings()
    lora: LoraSettings = LoraSettings()
    data: DataSettings = DataSettings()
    rewards: dict[str, RewardValue] = Field(
        default_factory=lambda: {"format": 0.5, "correctness": 2.0}, min_length=1)
    """Reward functions and their weights (TRL `reward_weights`): a built-in name (see
    `grpo_job.rewards.REGISTRY`), a TRL reward (`grpo_job.rewards.TRL_REWARDS`, e.g.
    `get_soft_overlong_punishment`, alias `soft_overlong`) or `module:function` for your own. The
    value is the weight, or an entry with the weight and the reward's keyword arguments:
    `{correctness: 2.0, soft_overlong: {weight: 1.0, max_completion_len: 384, soft_punish_cache: 48}}`."""
    train: TrainSettings = TrainSettings()
    store: StoreSettings = StoreSettings()
    stop: StopSettings = StopSettings()
    export: ExportSettings = ExportSettings()
    hub: HubSettings = HubSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    health: HealthSettings = HealthSettings()
    report: ReportSettings = ReportSettings()
    distributed: DistributedSettings = DistributedSettings()

    hf_token: SecretStr | None = Field(None, validation_alias=AliasChoices("HF_TOKEN", "hf_token"))
    """Hugging Face token, from the standard `HF_TOKEN` variable; needed to publish."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # keyword arguments > CLI overrides > environment > YAML > defaults.
        return (layered_source(settings_cls, init_settings, env_settings),)

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format_any_case(cls, v: Any) -> Any:
        # `TEXT` and `Json` as the README promises (a new user's trial: GRPO_LOG_FORMAT=TEXT was refused)
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("rewards")
    @classmethod
    def _reward_names(cls, v: dict[str, float | RewardEntry]) -> dict[str, float | RewardEntry]:
        problems = []
        for name, entry in v.items():
            weight = entry.weight if isinstance(entry, RewardEntry) else entry
            if not math.isfinite(weight):
                problems.append(f"reward {name!r} has a non-finite weight {weight}")
            if name not in BUILTIN_REWARDS and ":" not in name:
                hint = unknown_reward_hint(name, tuple(cls.model_fields))
                if not hint and isinstance(entry, float):  # `"seconds_per_case": 2` beside its reward (trial Y)
                    from grpo_job.rewards import argument_hint

                    hint = f"{said.removeprefix('; ')}; " if (said := argument_hint(name, entry, v)) else ""
                problems.append(f"unknown reward {name!r}: {hint}use one of {sorted(BUILTIN_REWARDS)} or module:function")
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> JobSettings:
        found = rules.problems(self)
        if found:
            raise ValueError("\n".join(found))
        return self

    _source_notes: list[str] = PrivateAttr(default_factory=list)  # what loading saw of the sources (loading.py)

    def warnings(self) -> list[str]:
        """Known traps that are legal but usually wrong: logged by `check` and `run`, never fatal."""
        return [*rules.warnings(self), *self._source_notes]

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON-able data with secrets masked: what logs and saved configs get."""
        return json.loads(self.model_dump_json(exclude={"hf_token"}))

    def fingerprint(self) -> str:
        """A short hash of what defines the run's result (not where it is stored or how it logs)."""
        data = self.redacted()
        for k in ("run_id", "log_format", "work_dir", "cache_dir", "store", "stop"):
            data.pop(k, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    def resolved_cache_dir(self) -> Path:
        """`cache_dir`, or `<work_dir>/cache` when it is not set."""
        return self.cache_dir if self.cache_dir is not None else self.work_dir / "cache"

    def resolved_run_id(self) -> str:
        return self.run_id or f"run-{self.fingerprint()}"
