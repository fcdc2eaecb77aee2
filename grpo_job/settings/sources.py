"""The sources the root settings read, and how they are layered: keyword arguments > CLI overrides >
environment (`GRPO_` prefix, `__` for nesting) > YAML file > defaults.

`JobSettings.settings_customise_sources` (`settings.root`) builds them with `layered_source`;
`load_settings` (`settings.loading`) hands over the YAML file's mapping and the CLI overrides of one call
through the context variables `current_yaml` and `current_cli_args`. Below both modules, so that neither
imports the other for them.
"""

from __future__ import annotations

import contextvars
from typing import Any

from pydantic import BaseModel
from pydantic_settings import BaseSettings, CliSettingsSource, InitSettingsSource, PydanticBaseSettingsSource

ENV_PREFIX = "GRPO_"
NONE_STR = "null"  # an env or CLI value that means None (YAML has its own `null`)

# The sources of one load_settings call: the YAML file's mapping and the CLI overrides.
current_yaml: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("grpo_yaml_values", default=None)
current_cli_args: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("grpo_cli_args", default=())


def is_section(model: type[BaseModel], name: str) -> bool:
    """`name` is a field of `model` that holds a section (a model of its own: `train`, `data`, ...)."""
    field = model.model_fields.get(name)
    return field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


class LayeredSource(PydanticBaseSettingsSource):
    """CLI > environment > YAML, merged section by section.

    pydantic-settings deep-merges its sources, so a dict setting could only grow: `--rewards=...` on a
    config that lists three rewards kept all three. Here a section (`train`, `data`, ...) is merged
    field by field, but every field is taken whole from the highest source that sets it: a dict
    (`rewards`, `train.extra`) or list setting replaces, never merges.
    """

    def __init__(self, settings_cls: type[BaseSettings], layers: list[PydanticBaseSettingsSource]):
        super().__init__(settings_cls)
        self.layers = layers  # highest precedence first

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # required; __call__ is used
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for layer in reversed(self.layers):
            for key, value in layer().items():
                if is_section(self.settings_cls, key) and isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
        return merged


def layered_source(settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                   env_settings: PydanticBaseSettingsSource) -> LayeredSource:
    """Keyword arguments > CLI overrides (`current_cli_args`) > environment > YAML (`current_yaml`)."""
    cli = CliSettingsSource(settings_cls, cli_parse_none_str=NONE_STR, cli_implicit_flags=False,
                            cli_exit_on_error=False, cli_avoid_json=False)
    layers = [init_settings, cli(args=list(current_cli_args.get())), env_settings,
              InitSettingsSource(settings_cls, init_kwargs=current_yaml.get() or {})]
    return LayeredSource(settings_cls, layers)
