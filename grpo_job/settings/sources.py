"""The sources the root settings read, and how they are layered: keyword arguments > CLI overrides >
environment (`GRPO_` prefix, `__` for nesting) > YAML file > defaults.

`JobSettings.settings_customise_sources` (`settings.root`) builds them with `layered_source`;
`load_settings` (`settings.loading`) hands over the YAML file's mapping and the CLI overrides of one call
through the context variables `current_yaml` and `current_cli_args`. Below both modules, so that neither
imports the other for them. `read_yaml` reads the YAML file (a repeated key is an error).
"""

from __future__ import annotations

import contextvars
import copy
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_settings import BaseSettings, CliSettingsSource, InitSettingsSource, PydanticBaseSettingsSource

from grpo_job.errors import SettingsError

ENV_PREFIX = "GRPO_"
CONFIG_ENV = "GRPO_CONFIG"  # the settings file, when --config does not name one
NONE_STR = "null"  # an env or CLI value that means None (YAML has its own `null`)

# The sources of one load_settings call: the YAML file's mapping and the CLI overrides.
current_yaml: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("grpo_yaml_values", default=None)
current_cli_args: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("grpo_cli_args", default=())


def is_section(model: type[BaseModel], name: str) -> bool:
    """`name` is a field of `model` that holds a section (a model of its own: `train`, `data`, ...)."""
    field = model.model_fields.get(name)
    return field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def dict_settings(model: type[BaseModel]) -> list[tuple[str, ...]]:
    """Where `model` (the root settings) has dict settings: `("rewards",)`, `("train", "extra")`."""
    out = []
    for name, field in model.model_fields.items():
        if is_section(model, name):
            out += [(name, sub) for sub, f in field.annotation.model_fields.items()
                    if getattr(f.annotation, "__origin__", None) is dict]
        elif getattr(field.annotation, "__origin__", None) is dict:
            out.append((name,))
    return out


class LayeredSource(PydanticBaseSettingsSource):
    """CLI > environment > YAML, merged section by section.

    pydantic-settings deep-merges its sources, so a dict setting could only grow: `--rewards=...` on a
    config that lists three rewards kept all three. Here a section (`train`, `data`, ...) is merged
    field by field, but every field is taken whole from the highest source that sets it: a dict
    (`rewards`, `train.extra`) or list setting replaces, never merges. Except a dict setting the environment
    gives key by key (`GRPO_REWARDS__CODE__WEIGHT=2`, `GRPO_TRAIN__EXTRA__TOP_P=0.9`): those keys change the
    config file's dict, key by key (trials X and Z: one weight's variable dropped every other reward and argument
    of the file). Its whole variable (`GRPO_REWARDS='{...}'`) still replaces.
    """

    def __init__(self, settings_cls: type[BaseSettings], layers: list[PydanticBaseSettingsSource]):
        super().__init__(settings_cls)
        self.layers = layers  # highest precedence first

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # required; __call__ is used
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for layer in reversed(self.layers):
            values = layer()
            if isinstance(layer, _KeyByKeyText):
                for loc in key_by_key_dicts(self.settings_cls):
                    _merge_at(values, merged, loc)
            for key, value in values.items():
                if is_section(self.settings_cls, key) and isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
        return merged


def key_by_key_dicts(model: type[BaseModel]) -> list[tuple[str, ...]]:
    """The dict settings the environment gives key by key only (`GRPO_REWARDS__CODE__WEIGHT`, no `GRPO_REWARDS`)."""
    names = {k.upper() for k in os.environ}
    out = []
    for loc in dict_settings(model):
        var = ENV_PREFIX + "__".join(loc).upper()
        if var not in names and any(n.startswith(var + "__") for n in names):
            out.append(loc)
    return out


def _merge_at(values: dict[str, Any], lower: dict[str, Any], loc: tuple[str, ...]) -> None:
    """The environment's dict at `loc` in `values` (given key by key) put over `lower`'s, in place: each variable
    replaces its own key path and nothing else (`GRPO_TRAIN__EXTRA__GENERATION_KWARGS='{...}'` replaces the file's
    generation_kwargs; `..._GENERATION_KWARGS__MIN_TOKENS=3` changes that key of it); `null` removes the key (TRL's
    or the reward's default again); a number for a reward the file gives with arguments is its weight (trial AA)."""
    *outer, last = loc
    here, below = values, lower
    for part in outer:
        here, below = here.get(part), below.get(part) if isinstance(below, dict) else None
        if not isinstance(here, dict):
            return
    if not (isinstance(here.get(last), dict) and isinstance(below, dict) and isinstance(below.get(last), dict)):
        return  # nothing below to change: the environment's dict stands
    merged = copy.deepcopy(below[last])
    for path, _ in key_variables(loc):
        value: Any = here[last]
        for part in path:
            value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
        if value is not _MISSING:
            put_key(merged, path, value, weighted=loc == ("rewards",))
    here[last] = merged


_MISSING = object()


def key_variables(loc: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
    """(key path, variable) of each environment variable that sets a key under the dict setting at `loc`
    (`GRPO_TRAIN__EXTRA__GENERATION_KWARGS__MIN_TOKENS` -> `("generation_kwargs", "min_tokens")`), shortest first:
    the order a key's own JSON and then its keys' variables are put in."""
    var = ENV_PREFIX + "__".join(loc).upper()
    found = {tuple(n.upper()[len(var) + 2:].lower().split("__")): n for n in os.environ if n.upper().startswith(var + "__")}
    return sorted(found.items(), key=lambda item: len(item[0]))


def put_key(target: dict[str, Any], path: tuple[str, ...], value: Any, weighted: bool) -> None:
    """`value` at the key path `path` of `target` (a dict setting's value), as one variable of it gives it: `null`
    removes the key; `weighted` (`rewards`): a number for an entry with arguments is its weight."""
    *parents, key = path
    place = target
    for depth, part in enumerate(parents):
        inner = place.get(part)
        if weighted and depth == 0 and inner is not None and not isinstance(inner, dict):
            inner = {"weight": inner}  # a reward the file gives as its weight alone, now given arguments
        place[part] = place = inner if isinstance(inner, dict) else {}
    if value is None or value == NONE_STR:
        place.pop(key, None)
    elif weighted and not parents and not isinstance(value, dict) and isinstance(place.get(key), dict):
        place[key] = {**place[key], "weight": value}
    else:
        place[key] = value


def layered_source(settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                   env_settings: PydanticBaseSettingsSource) -> LayeredSource:
    """Keyword arguments > CLI overrides (`current_cli_args`) > environment > YAML (`current_yaml`)."""
    cli = CliSettingsSource(settings_cls, cli_parse_none_str=NONE_STR, cli_implicit_flags=False,
                            cli_exit_on_error=False, cli_avoid_json=False)
    layers = [init_settings, cli(args=list(current_cli_args.get())), _KeyByKeyText(env_settings),
              InitSettingsSource(settings_cls, init_kwargs=current_yaml.get() or {})]
    return LayeredSource(settings_cls, layers)


EXTRA_ENV = f"{ENV_PREFIX}TRAIN__EXTRA__"
# a number as JSON writes it, and exponent forms without a dot (`3e-1`, which YAML 1.1 leaves as text); not YAML
# 1.1's other numbers (`010` octal, `0x1F`, `1_000`, `12:30` base 60), which stay text
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|-?(?:0|[1-9]\d*)?\.\d+(?:[eE][-+]?\d+)?")
NULLS = ("null", "Null", "NULL", "~")
# YAML 1.1's booleans (PyYAML's): what a YAML file would make of them
_BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
# keys of keys whose value is text (vLLM's SamplingParams): `stop=no` is the stop string "no"
TEXT_KEYS = {("generation_kwargs", "stop"), ("generation_kwargs", "bad_words")}


def read_env_text(text: str, *, typed: bool) -> Any:
    """A `GRPO_TRAIN__EXTRA__<KEY>[__<KEY>...]` variable's text as its value. A list or mapping (`[a, b]`,
    `{k: v}`) is read as YAML flow. `typed`: a GRPOConfig argument's own (top level) stays text otherwise, and
    `settings.environment.grpo_config_extra` converts it by the argument's type (`0.95` for a float, `no` for a
    boolean or transformers' "no", `010` for a text `run_name`). A key of a key (`generation_kwargs.min_tokens`)
    has no type to convert by: `null`, YAML 1.1's booleans (`true`, `no`, `off`...) and numbers as JSON writes
    them (and `3e-1`) are read, every other text stays text (`###`, `Question:`, `run #3`, `2024-01-01`, `010`,
    `12:30`); so do TEXT_KEYS (`stop=no`)."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    if typed:
        return text
    if stripped in NULLS:
        return None
    if stripped.lower() in _BOOLEANS:
        return _BOOLEANS[stripped.lower()]
    if _NUMBER.fullmatch(stripped):
        number = float(stripped)
        return int(number) if number.is_integer() and not any(c in stripped for c in ".eE") else number
    return text


class _KeyByKeyText:
    """The environment source, with the text of each `GRPO_TRAIN__EXTRA__...` variable read by `read_env_text`
    (pydantic-settings leaves a free-form dict's values as the variables' text). Only those: a JSON value
    (`GRPO_TRAIN__EXTRA='{...}'`), a file's or the command line's keep their quoted text as text."""

    def __init__(self, env_settings: PydanticBaseSettingsSource):
        self.env_settings = env_settings

    def __call__(self) -> dict[str, Any]:
        values = self.env_settings()
        train = values.get("train")
        extra = train.get("extra") if isinstance(train, dict) else None
        if not isinstance(extra, dict):
            return values
        extra = _copy_dicts(extra)
        for name, text in os.environ.items():
            if not name.upper().startswith(EXTRA_ENV) or len(name) == len(EXTRA_ENV):
                continue
            path = name[len(EXTRA_ENV):].lower().split("__")
            parent = extra
            for key in path[:-1]:
                parent = parent.get(key) if isinstance(parent, dict) else None
            if isinstance(parent, dict) and parent.get(path[-1]) == text:
                parent[path[-1]] = (text if tuple(path) in TEXT_KEYS and text.strip()[:1] != "[" else
                                    read_env_text(text, typed=len(path) == 1))
        return {**values, "train": {**train, "extra": extra}}


def _copy_dicts(value: Any) -> Any:
    return {k: _copy_dicts(v) for k, v in value.items()} if isinstance(value, dict) else value


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML keeps the last of two equal keys without a word; a settings file must not."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise SettingsError(
                    f"config file {self.name!r}: key {key!r} appears twice (lines {seen[key]} and {line}); "
                    "YAML would keep only the last one silently: remove one of them"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# YAML 1.2's integers, not 1.1's (PyYAML's): `010` is ten, not octal eight, and `1:30` is text, not ninety, as the
# environment reads them (trial: `max_steps: 010` ran 8 steps); `0o10` and `0x10` stay octal and hexadecimal.
_INT = "tag:yaml.org,2002:int"
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _INT]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_UniqueKeyLoader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                       list("-+0123456789"))


def _yaml_1_2_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    return int(text, 0 if text[:2] in ("0o", "0x") else 10)


_UniqueKeyLoader.add_constructor(_INT, _yaml_1_2_int)


def config_variable() -> str | None:
    """GRPO_CONFIG's value, its name in any case as every GRPO_* name (trial Z: `GRPO_Config` was ignored)."""
    return next((v for k, v in sorted(os.environ.items()) if k.upper() == CONFIG_ENV), None)


def read_config(config: str | Path | None) -> tuple[str | None, dict[str, Any]]:
    """The settings file `--config` names, else `GRPO_CONFIG`, and its values (`read_yaml`); (None, {}) when neither
    is given. SettingsError for a blank one: an empty variable (a manifest's unfilled template) ran on every default
    without a word (trial)."""
    given, where = (str(config), "--config") if config is not None else (config_variable(), CONFIG_ENV)
    if given is not None and not given.strip():
        raise SettingsError(f"{where} is set but empty: name a settings file, or "
                            f"{'leave it out' if where == '--config' else 'unset it'} to configure the job by GRPO_* "
                            "variables and the command line alone")
    return given, read_yaml(given) if given else {}


def read_yaml(path: str) -> dict[str, Any]:
    """The settings file as a mapping; SettingsError for a missing file, bad YAML or a repeated key."""
    if not Path(path).is_file():
        what = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
        raise SettingsError(f"config file {path!r} {what} (from --config or {CONFIG_ENV})")
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not YAML
    except UnicodeDecodeError as e:
        raise SettingsError(f"config file {path!r} is not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8 "
                            "(an editor's UTF-16 or Latin-1 is not read)") from None
    try:
        loader = _UniqueKeyLoader(text)
        loader.name = path
        try:
            loaded = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        # without the quoted line: it may hold a secret (an unclosed quote on a token's line)
        for mark in (getattr(e, "context_mark", None), getattr(e, "problem_mark", None)):
            if mark is not None:
                mark.buffer = None
        hint = ""
        if "mapping values are not allowed here" in str(e):  # where PyYAML notices it is the line after (trial)
            hint = ("; this line is indented under a key that already has a value (often the line above: a key "
                    "moved out of its section ends the section there), or a value holding ': ' needs quotes")
        raise SettingsError(f"config file {path!r} is not valid YAML: {e}{hint}") from None
    if loaded is None:  # as a blank GRPO_CONFIG: a run on every default is never what a file named meant (trial)
        raise SettingsError(f"config file {path!r} holds no settings (it is empty, or comments and `~` only): write "
                            "its sections, or leave it out to configure the job by GRPO_* variables alone")
    if not isinstance(loaded, dict):
        raise SettingsError(f"config file {path!r} must hold a mapping of sections, not {type(loaded).__name__}")
    return loaded
