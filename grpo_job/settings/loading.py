"""Loading the settings: `load_settings` builds the root `JobSettings` (`settings.root`) from its
sources (`settings.sources`) for one call, reads the YAML file, and words errors for the user: the
GRPO_* variable or `--name` behind each bad value, unknown names with the closest real one.

Sources, highest precedence first: CLI overrides (`--train.max_steps=5`), environment (`GRPO_` prefix, `__` for
nesting: `GRPO_TRAIN__MAX_STEPS=5`), a YAML file (`--config` or `GRPO_CONFIG`), then the defaults.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import os
import re
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError as SourceError

from grpo_job.errors import SettingsError
from grpo_job.settings.provenance import (
    env_var_name,
    replaced_dicts,
    setting_paths,
    source_label,
    where_notes,
)
from grpo_job.settings.rewards import entry_keys
from grpo_job.settings.root import JobSettings
from grpo_job.settings.sources import (
    CONFIG_ENV,
    ENV_PREFIX,
    current_cli_args,
    current_yaml,
    dict_settings,
    key_variables,
    put_key,
    read_config,
    read_env_text,
)

# GRPO_* variables that are not settings: read by the CLI, the launcher and the GPU tests (which pass
# their environment on to the job).
RESERVED_ENV = frozenset({CONFIG_ENV, "GRPO_EXIT_CODE_DIR", "GRPO_GPU_TEST_MODEL", "GRPO_GPU_QWEN_MODEL", "GRPO_GPU_RUNS",
                          "GRPO_GPU_GSM8K"})


def did_you_mean(wrong: str, choices: list[str]) -> str:
    """`; did you mean 'x'?`: the one setting of that name in a section (trial: `save_steps` at the top of the
    YAML, meant as `train.save_steps`), else the closest name."""
    leaf = lambda name: re.split(r"\.|__", name.lstrip("-").removeprefix("GRPO_").lower())[-1]  # noqa: E731
    # the same name but for its separators first (trial Y: a single `_` for `__` in data.path's variable was told
    # evaluation.data_path's, the same leaf name)
    squash = lambda name: re.sub(r"[-_.]", "", name.lower())  # noqa: E731
    same = [c for c in choices if squash(c) == squash(wrong) and c.lower() != wrong.lower()]
    moved = [c for c in choices if leaf(c) == leaf(wrong) and c.lower() != wrong.lower()]
    close = same[:1] or (moved if len(moved) == 1 else difflib.get_close_matches(wrong, choices, n=1, cutoff=0.6))
    secret = close[0].lstrip("-").lower() if close else ""
    if secret in _SECRETS:  # a setting that only its variable may set: name the variable
        return f"; a token comes from the {_SECRETS[secret]} environment variable only"
    return f"; did you mean {close[0]!r}?" if close else ""


def format_validation_error(err: ValidationError, sources: dict[str, Any] | None = None) -> str:
    """One line per problem: the setting, where its value came from (`source_label`: the command line,
    the environment variable or the config file; with `sources` given as `source_label`'s keyword
    arguments, else the variable's name), pydantic's message and the value."""
    errors = err.errors(include_url=False)
    # an item's missing field that a misnamed key of the same item stands for (`answer:` for `completion`): that
    # key's line says it, a "Field required" line beside it would only repeat it (second trial)
    renamed = {(*tuple(e["loc"])[:-1], _ITEM_SYNONYMS[str(e["loc"][-1]).lower()][1]) for e in errors
               if e["type"] == "extra_forbidden" and str(e["loc"][-1]).lower() in _ITEM_SYNONYMS}
    errors = [e for e in errors if not (e["type"] == "missing" and tuple(e["loc"]) in renamed)]
    lines = [f"invalid settings ({len(errors)} problem{'s' if len(errors) > 1 else ''}):"]
    for e in errors:
        loc = tuple(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if not loc:  # cross-field rules: one line per rule, and where the variables they name were set
            lines.extend(f"  - {m}" for m in msg.split("\n"))
            if sources is not None and (notes := where_notes(msg, sources)):
                lines.append(f"    {notes}")
            continue
        where = ".".join(str(p) for p in loc)
        label = source_label(loc, **sources) if sources is not None else env_var_name(loc)
        if e["type"] == "extra_forbidden" and (fields := _item_fields(loc[:-1])) is not None:
            # a key inside an item (a few_shot example): its model's own fields, not every setting's path
            owner = ".".join(str(p) for p in loc[:-1] if not isinstance(p, int))
            msg = (f"no such field: an item of {owner} has {' and '.join(fields)}"
                   f"{_ITEM_SYNONYMS.get(str(loc[-1]).lower(), ('', ''))[0]}")
        elif e["type"] == "extra_forbidden":
            choices = [*JobSettings.model_fields, *setting_paths()] if len(loc) == 1 else setting_paths()
            variable = label.startswith(ENV_PREFIX)  # named as the user wrote it (trial: env-only deployments)
            names = [env_var_name(tuple(c.split("."))) for c in choices] if variable else choices
            msg = "no such setting" + did_you_mean(label if variable else where, names)
        elif e["type"] == "string_type" and isinstance(e.get("input"), (bool, int, float)):  # `run_id: 010` (trial)
            msg += "; YAML and JSON read an unquoted number, yes or no as one: quote the text (\"010\")"
        elif e["type"] == "reward_weight" and len(loc) == 2:  # trial Y: `{"code": 1.0, "tests_column": "checks"}`
            from grpo_job.rewards import argument_hint

            beside = ((sources or {}).get("yaml_values") or {}).get("rewards") if "config file" in label else None
            if label == "GRPO_REWARDS":  # the variable's JSON holds the entries beside it
                with contextlib.suppress(ValueError):
                    beside = json.loads(os.environ.get(label) or "null")
            msg += argument_hint(str(loc[1]), e.get("input"), beside if isinstance(beside, dict) else None,
                                 by_variable=label.upper() == f"GRPO_REWARDS__{str(loc[1]).upper()}")
        elif e["type"] == "list_type" and isinstance(e.get("input"), str):  # an empty variable (trial)
            msg += "; a list is JSON: '[]' for none, '[\"a\", \"b\"]' for two"
        shown = "" if e["type"] in ("missing", "extra_forbidden") or loc == ("hf_token",) else f" (got {e.get('input')!r})"
        lines.append(f"  - {where} [{label}]: {msg}{shown}")
    return "\n".join(lines)


def unknown_env_names(environ: dict[str, str] | None = None) -> list[str]:
    """`GRPO_*` variables that name no setting (a typo such as GRPO_TRIAN__MAX_STEPS would otherwise be
    ignored without a word), each with the closest real name."""
    environ = os.environ if environ is None else environ
    valid = {env_var_name(tuple(p.split("."))) for p in setting_paths()}
    dicts = {v for v in valid if _is_dict_setting(v)}
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in RESERVED_ENV or upper in valid:
            continue
        parts = upper[len(ENV_PREFIX):].split("__")
        # keys inside a dict setting: GRPO_REWARDS__CORRECTNESS=1, GRPO_TRAIN__EXTRA__TOP_P=0.9
        if len(parts) > 1 and any(upper.startswith(v + "__") and _is_dict_setting(v) for v in valid):
            continue
        # a key of a misspelt dict setting is that setting's key (trial Y: rewards.code's variable without the S was
        # told GRPO_REWARDS, the key dropped)
        keyed = {f"{d}__{'__'.join(parts[k:])}" for d in dicts if len(parts) > (k := d.count("__") + 1)
                 and difflib.SequenceMatcher(None, ENV_PREFIX + "__".join(parts[:k]), d).ratio() >= 0.8} | {
            f"{d}__{upper[len(d) + 1:]}" for d in dicts if upper.startswith(d + "_") and upper[len(d) + 1:2 + len(d)] != "_"}
        choices = sorted(valid | keyed | {CONFIG_ENV})  # (trial Z: a plural of it was told GRPO_RUN_ID)
        problems.append(f"environment variable {name} names no setting{did_you_mean(upper, choices)}")
    # a dict setting, or a key of one holding a dict of its own (GRPO_TRAIN__EXTRA__GENERATION_KWARGS: trial)
    wholes = {n.upper() for n in environ if n.upper() in dicts or any(n.upper().startswith(d + "__") for d in dicts)}
    for var in sorted(wholes):
        keys = sorted(n for n in environ if n.upper().startswith(var + "__"))
        if keys:  # pydantic-settings keeps the whole JSON and drops the keys without a word (second trial)
            problems.append(f"environment variables {var} and {', '.join(keys)} both set {var}: the whole one would "
                            "drop the others; put those keys in its JSON, or set every key on its own")
    return problems


def _is_dict_setting(env_name: str) -> bool:
    return env_name in {ENV_PREFIX + "__".join(loc).upper() for loc in dict_settings(JobSettings)}


# Settings that hold a secret, and the only variable each comes from.
_SECRETS = {"hf_token": "HF_TOKEN"}


def _secrets_outside_env(yaml_values: dict[str, Any], overrides: list[str], path: str | None) -> list[str]:
    """A secret in the config file or on the command line: one problem each, without the value. A token
    in a file reaches git, images and CI logs; on the command line, `ps`, pod specs and shell history."""
    out = []
    for name, var in _SECRETS.items():
        if any(str(k).lower() == name for k in yaml_values):
            out.append(f"{name} in config file {path!r}: a secret comes from its variable only; remove it from "
                       f"the file and set {var} (a Kubernetes Secret, a CI secret)")
        if any(a.split("=", 1)[0].lstrip("-").lower() == name for a in overrides):
            out.append(f"--{name} on the command line: a secret comes from its variable only; set {var} instead")
    return out


def _without_secrets(yaml_values: dict[str, Any], overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    kept_yaml = {k: v for k, v in yaml_values.items() if str(k).lower() not in _SECRETS}
    kept, skip = [], False
    for arg in overrides:
        name = arg.split("=", 1)[0].lstrip("-").lower()
        if skip or name in _SECRETS:
            skip = not skip and name in _SECRETS and "=" not in arg  # `--hf_token VALUE`: the value goes too
            continue
        kept.append(arg)
    return kept_yaml, kept


# the names other tools give an example's two parts (datasets' columns, chat exports), and TRL's that the job takes
_ITEM_SYNONYMS = {name: (f" (TRL's name for {name!r} is {trl!r})", trl) for trl, names in (
    ("prompt", ("question", "input", "problem", "query", "instruction", "user")),
    ("completion", ("answer", "output", "response", "solution", "assistant", "target")),
) for name in names}


def _item_fields(loc: tuple[Any, ...]) -> list[str] | None:
    """The fields of the model that an item of a list setting is (`('data', 'few_shot', 0)` -> prompt,
    completion); None when `loc` is no item of a list of models."""
    if not loc or not isinstance(loc[-1], int):
        return None
    model: Any = JobSettings
    for part in loc:
        if isinstance(part, int):
            args = typing.get_args(model)
            model = args[0] if args else None
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = field.annotation
    return list(model.model_fields) if isinstance(model, type) and hasattr(model, "model_fields") else None


def load_settings(config: str | Path | None = None, overrides: list[str] | None = None) -> JobSettings:
    """Build the settings from all sources; raise SettingsError with every problem in one message.

    `overrides` are CLI arguments as pydantic-settings' CLI reads them: `--train.max_steps=5`,
    `--model.engine trl`, lists as `[a,b]` or `a,b`, dicts as JSON (`--rewards='{"format": 1}'`),
    `null` for None. Pure: reads the values and the environment's GRPO_* names, never files other than
    the YAML, packages or the network (see `grpo_job.settings.environment` for those checks).
    """
    path, yaml_values = read_config(config)
    secrets = _secrets_outside_env(yaml_values, overrides or [], path)
    problems = [f"  - {p}" for p in [*unknown_env_names(), *secrets]]
    if secrets:  # never validated, so no error message can quote the value
        yaml_values, overrides = _without_secrets(yaml_values, overrides or [])
    settings, found = _validate(yaml_values, list(overrides or []), path)
    if settings is not None:
        settings._source_notes = replaced_dicts(yaml_values, settings, overrides or [], path)
    # a misspelt section field in the environment (data.answer_colum) is also a field pydantic refused: say it once
    # ours names the variable meant, where pydantic's knows only the section's fields (trial Z: a key of
    # train.extra with one `_` was told GRPO_TRAIN__EXTRA)
    named = [p.split()[3] for p in problems if p.startswith("  - environment variable ")]
    problems = [f for f in found if not any(f"[{n}]" in f for n in named)] + problems
    if problems:
        n = sum(line.startswith("  - ") for line in problems)
        raise SettingsError(f"invalid settings ({n} problem{'s' if n > 1 else ''}):\n" + "\n".join(problems))
    return settings


def _validate(yaml_values: dict[str, Any], overrides: list[str], path: str | None) -> tuple[JobSettings | None, list[str]]:
    """The settings of these sources, or None and every problem found (`  - ` lines). An unknown `--name`
    stops pydantic-settings' CLI before any value is validated: the rest of the command line is then
    validated again without it, so one run of `check` lists every problem."""
    tokens = (current_yaml.set(yaml_values), current_cli_args.set(tuple(overrides)))
    try:
        return JobSettings(), []
    except ValidationError as e:
        sources = {"cli_args": tuple(overrides), "yaml_values": yaml_values, "yaml_path": path}
        return None, format_validation_error(e, sources).splitlines()[1:]
    except SourceError as e:
        first = f"  - {_env_error(e) or _cli_error(str(e), overrides, yaml_values)}"
        known = _without_unknown(overrides, str(e))
        return None, [first, *(_validate(yaml_values, known, path)[1] if known is not None else [])]
    finally:
        current_yaml.reset(tokens[0])
        current_cli_args.reset(tokens[1])


def _without_unknown(overrides: list[str], message: str) -> list[str] | None:
    """`overrides` less the arguments pydantic-settings' CLI named as unrecognized; None when it named none
    of them (another error), so validation is not repeated on the same arguments."""
    if "unrecognized arguments:" not in message:
        return None
    rest = list(overrides)
    for token in message.split("unrecognized arguments:", 1)[1].split():
        if token in rest:
            rest.remove(token)
    return rest if len(rest) < len(overrides) else None


def _env_error(error: SourceError) -> str | None:
    """pydantic-settings' error for an environment value it could not parse (`error parsing value for
    field "rewards" from source "EnvSettingsSource"`), reworded: which GRPO_* variable, and json's own
    message (line, column) for a dict or list setting holding invalid JSON. None for other errors."""
    if '"EnvSettingsSource"' not in str(error):
        return None
    environ = os.environ
    field = str(error).split('"')[1] if str(error).count('"') >= 2 else ""
    stem = ENV_PREFIX + field.upper()
    names = sorted(k for k in environ if k.upper() == stem or k.upper().startswith(stem + "__"))
    cause = error.__cause__
    if isinstance(cause, json.JSONDecodeError):
        # the value json could not read is the cause's `doc`: that names the variable among the field's ones
        names = [k for k in names if environ[k] == cause.doc] or names
        shown = cause.doc if len(cause.doc) <= 200 else cause.doc[:200] + "…"
        return (f"environment variable {' or '.join(names) or stem} holds invalid JSON ({cause}): {shown!r}; a "
                "dict or list setting from the environment is written in JSON, strings in double quotes: e.g. "
                '{"format": 0.5, "correctness": 2.0} or ["q_proj", "v_proj"]')
    why = f": {cause}" if cause is not None else ""
    return f"environment variable {' or '.join(names) or stem} cannot be read{why}"


def _cli_error(message: str, args: Sequence[str] = (), file_values: dict[str, Any] | None = None) -> str:
    """pydantic-settings' CLI error, with the closest setting for an unknown `--name`. `args`: the command line,
    whose whole arguments replace the error's words (it joins them with spaces: a JSON value was cut at one);
    `file_values`: the config file's, which a suggested whole dict keeps."""
    message = message.removeprefix("error parsing CLI: ")
    if "unrecognized arguments:" in message:
        unknown = message.split("unrecognized arguments:", 1)[1].split()
        unknown = [next((a for a in args if a.startswith(u)), u) if u.startswith("--") else u for u in unknown]
        choices = [f"--{p}" for p in setting_paths()] + ["--config", "--print-settings"]  # the CLI's own options
        hints = [_unknown_flag(u, choices, file_values or {}) for u in unknown if u.startswith("--")]
        return "invalid command line: " + ("; ".join(hints) or message)
    field = re.match(r"Parsing error encountered for ([\w.]+): ", message)
    if field and _is_dict_setting(env_var_name(tuple(field[1].split(".")))):
        # pydantic-settings' own words here are Python's ("not enough values to unpack (expected 2, got 1)")
        flag = f"--{field[1]}"
        given = next((a.partition("=")[2] if a != flag else (args[i + 1] if i + 1 < len(args) else None)
                      for i, a in enumerate(args) if a == flag or a.startswith(flag + "=")), None)
        got = f" (got {given!r})" if given is not None else ""
        none = f"; {flag}='{{}}' for none" if field[1] != "rewards" else ""  # a run needs a reward
        return (f"invalid command line: {flag} takes a mapping{got}: JSON, {flag}='{{\"key\": 0.5}}', or "
                f"key=value pairs, {flag}=key=0.5,other=1{none}")
    return f"invalid command line: {message}"


def _unknown_flag(arg: str, choices: list[str], file_values: dict[str, Any]) -> str:
    """`--train.extra.top_p=0.9` is a key of a dict setting, which the CLI takes only whole, as JSON: the JSON to
    give, with the config file's own keys kept in it (trial: `--rewards.json_schema.weight=2` was told to use
    `--rewards='{"json_schema.weight": 2}'`, an unknown reward, or its variable, which drops the file's arguments)."""
    flag, _, value = arg.partition("=")
    whole = next((c for c in choices if flag.startswith(c + ".") and _is_dict_setting(env_var_name(
        tuple(c[2:].split("."))))), None)
    if whole is None:
        return f"{flag} names no setting{did_you_mean(flag, choices)}"
    name = whole[2:]
    in_file: Any = file_values
    for part in name.split("."):
        in_file = in_file.get(part) if isinstance(in_file, dict) else None
    merged = copy.deepcopy(in_file) if isinstance(in_file, dict) and in_file else {}
    # and the environment's, which the flag replaces too (trial AA: a weight's variable was left out of the JSON)
    loc = tuple(name.split("."))
    with contextlib.suppress(ValueError):
        if isinstance(from_env := json.loads(os.environ.get(env_var_name(loc), "null")), dict):
            merged = from_env
    for path, var in key_variables(loc):
        put_key(merged, path, read_env_text(os.environ[var], typed=False), weighted=loc == ("rewards",))
    kept_any = bool(merged)  # the file's or the environment's keys, before the flag's goes in
    *outer, last = flag[len(whole) + 1:].split(".")
    place = merged
    for key in outer:
        inner = place.get(key)
        # a reward the file gives as its weight alone (`json_schema: 1.0`) keeps it as its entry's weight
        place[key] = entry_keys(inner) or {}
        place = place[key]
    try:
        given = json.loads(value) if value else "..."
    except ValueError:
        given = value
    # a dict given for a key that holds one merges into it (trial Z: `--rewards.code='{"weight": 2.0}'` was told to
    # give the code entry with its tests_column lost)
    held = place.get(last)
    place[last] = {**(entry_keys(held) or {}), **given} if isinstance(given, dict) else given
    variable = env_var_name(tuple(flag[2:].split(".")))
    kept = (f" (this keeps the {name} of the config file and the environment, which {whole} replaces whole); or the "
            f"variable {variable}={value or '...'}, which changes that key alone" if kept_any
            else f" (or the variable {variable})")
    return (f"{flag} names a key of the dict setting {name}, which the command line takes whole, as JSON: "
            f"{whole}='{json.dumps(merged)}'{kept}")
