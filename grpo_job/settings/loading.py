"""Loading the settings: the root `JobSettings`, its sources, and errors worded for the user.

Sources, highest precedence first: CLI overrides (`--train.max_steps=5`), environment (`GRPO_`
prefix, `__` for nesting: `GRPO_TRAIN__MAX_STEPS=5`), a YAML file (`--config` or `GRPO_CONFIG`),
then the defaults, which reproduce the reference recipe (Qwen2.5-3B-Instruct in 4-bit, GSM8K,
format 0.5 + correctness 2.0, LoRA r=32, lr 5e-6, 8 generations).

Secrets are `SecretStr` read from their standard variables (`HF_TOKEN`); AWS credentials are never
read here at all: boto3's own credential chain finds them.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from grpo_job import rewards as reward_registry
from grpo_job.errors import SettingsError
from grpo_job.settings import rules
from grpo_job.settings.sections import (
    DataSettings,
    DistributedSettings,
    EvaluationSettings,
    ExportSettings,
    HealthSettings,
    HubSettings,
    LoraSettings,
    ModelSettings,
    ReportSettings,
    RewardEntry,
    StopSettings,
    StoreSettings,
    TrainSettings,
)

ENV_PREFIX = "GRPO_"
CONFIG_ENV = "GRPO_CONFIG"

_config_path: contextvars.ContextVar[str | None] = contextvars.ContextVar("grpo_config_path", default=None)


class JobSettings(BaseSettings):
    """The whole job. See the module docstring for where values come from."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        nested_model_default_partial_update=True,
    )

    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
    """Stable name of this run in the store; the same id resumes the same run. Kubernetes manifests
    set it from the Job's name. When unset, it is derived from a hash of the settings."""

    log_format: Literal["auto", "text", "json"] = "auto"
    """`text` with a progress bar on a terminal, `json` (one object per line) for log collectors;
    `auto` picks text on a terminal, else json."""

    work_dir: Path = Path("/tmp/grpo-job")
    """Local scratch space (model cache, trainer output before upload)."""

    model: ModelSettings = ModelSettings()
    lora: LoraSettings = LoraSettings()
    data: DataSettings = DataSettings()
    rewards: dict[str, float | RewardEntry] = Field(
        default_factory=lambda: {"format": 0.5, "correctness": 2.0}, min_length=1)
    """Reward functions and their weights (TRL `reward_weights`): a built-in name (see
    `grpo_job.rewards.REGISTRY`), a TRL reward (`grpo_job.rewards.TRL_REWARDS`, e.g.
    `get_soft_overlong_punishment`, alias `soft_overlong`) or `module:function` for your own. The
    value is the weight, or an entry with the weight and the reward's keyword arguments:
    `{correctness: 2.0, soft_overlong: {weight: 1.0, max_completion_len: 512, soft_punish_cache: 64}}`."""
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
        # init (CLI overrides) > environment > YAML > defaults.
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=_config_path.get()))

    @field_validator("rewards")
    @classmethod
    def _rewards_resolve(cls, v: dict[str, float | RewardEntry]) -> dict[str, float | RewardEntry]:
        problems = []
        for name, entry in v.items():
            weight = entry.weight if isinstance(entry, RewardEntry) else entry
            if not math.isfinite(weight):
                problems.append(f"reward {name!r} has a non-finite weight {weight}")
            try:
                # builds it: a factory's arguments are checked (and TRL's own checks run) now
                reward_registry.build(name, entry.kwargs if isinstance(entry, RewardEntry) else None)
            except (LookupError, ImportError, TypeError, ValueError) as e:
                problems.append(str(e))
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> JobSettings:
        found = rules.problems(self)
        if found:
            raise ValueError("\n".join(found))
        return self

    def warnings(self) -> list[str]:
        """Known traps that are legal but usually wrong: logged by `check` and `run`, never fatal."""
        return rules.warnings(self)

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON-able data with secrets masked: what logs and saved configs get."""
        return json.loads(self.model_dump_json(exclude={"hf_token"}))

    def fingerprint(self) -> str:
        """A short hash of what defines the run's result (not where it is stored or how it logs)."""
        data = self.redacted()
        for k in ("run_id", "log_format", "work_dir", "store", "stop"):
            data.pop(k, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    def resolved_run_id(self) -> str:
        return self.run_id or f"run-{self.fingerprint()}"



def env_var_name(loc: tuple[Any, ...]) -> str:
    """('train', 'max_steps') -> GRPO_TRAIN__MAX_STEPS, the variable a user would set."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    if parts == ["hf_token"]:
        return "HF_TOKEN"
    return ENV_PREFIX + "__".join(p.upper() for p in parts)


def format_validation_error(err: ValidationError) -> str:
    lines = [f"invalid settings ({err.error_count()} problem{'s' if err.error_count() > 1 else ''}):"]
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if not loc:  # cross-field rules: one line per rule
            lines.extend(f"  - {m}" for m in msg.split("\n"))
            continue
        where = ".".join(str(p) for p in loc)
        shown = "" if e["type"] == "missing" or loc == ("hf_token",) else f" (got {e.get('input')!r})"
        lines.append(f"  - {where} [{env_var_name(loc)}]: {msg}{shown}")
    return "\n".join(lines)


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`--train.max_steps=5 --model.engine trl` -> {'train': {'max_steps': 5}, 'model': {'engine': 'trl'}}.

    Values are read as YAML scalars/flow collections, so numbers, booleans and `[a, b]` lists work.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise SettingsError(f"unexpected argument {arg!r}: overrides look like --section.field=value")
        key, sep, value = arg[2:].partition("=")
        if not sep:
            if i + 1 >= len(args):
                raise SettingsError(f"override {arg!r} has no value: write {arg}=VALUE")
            i += 1
            value = args[i]
        node = out
        *parents, leaf = key.replace("-", "_").split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value) if value != "" else ""
        i += 1
    return out


def load_settings(config: str | Path | None = None, overrides: list[str] | None = None) -> JobSettings:
    """Build the settings from all sources; raise SettingsError with every problem in one message."""
    import os

    path = str(config) if config else os.environ.get(CONFIG_ENV)
    if path and not Path(path).is_file():
        raise SettingsError(f"config file {path!r} does not exist (from --config or {CONFIG_ENV})")
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as e:
            raise SettingsError(f"config file {path!r} is not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"config file {path!r} must hold a mapping of sections, not {type(loaded).__name__}")
    init = parse_overrides(overrides or [])
    token = _config_path.set(path)
    try:
        return JobSettings(**init)
    except ValidationError as e:
        raise SettingsError(format_validation_error(e)) from None
    finally:
        _config_path.reset(token)

