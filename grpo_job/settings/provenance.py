"""Where each setting's value came from, for the job's messages: the GRPO_* variable of a setting
(`env_var_name`), the source that set it as the user wrote it (`source_label`: `--train.max_steps on the command
line`, the variable, or the config file), the `(where: ...)` line for messages that name variables a file or flags
set (`where_set`), and the keys of a dict setting that a higher source dropped (`replaced_dicts`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grpo_job.errors import SettingsError
from grpo_job.settings.rewards import entry_keys
from grpo_job.settings.root import JobSettings
from grpo_job.settings.sources import ENV_PREFIX, is_section, key_by_key_dicts, read_config


def is_section_name(name: str) -> bool:
    return is_section(JobSettings, name)


def env_var_name(loc: tuple[Any, ...]) -> str:
    """('train', 'max_steps') -> GRPO_TRAIN__MAX_STEPS, the variable a user would set."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return "HF_TOKEN" if parts == ["hf_token"] else ENV_PREFIX + "__".join(p.upper() for p in parts)


def setting_paths() -> list[str]:
    """Every settable name as a dotted path (`train.max_steps`), for suggestions."""
    return [path for name, field in JobSettings.model_fields.items()
            for path in ([f"{name}.{sub}" for sub in field.annotation.model_fields] if is_section_name(name) else [name])]


_VARIABLE = re.compile(r"(?<![A-Za-z0-9_])GRPO_[A-Z0-9_]*[A-Z0-9]")


def where_set(message: str, config: str | Path | None, overrides: list[str]) -> str:
    """`message` (an error found after loading: a file, a package, the data) with a last line naming, for
    each GRPO_* variable it names whose setting this run took from the config file or the command line,
    where: the job's messages name settings by their variables, which a run configured by a file never set."""
    try:
        path, yaml_values = read_config(config)
    except SettingsError:
        path, yaml_values = None, {}
    notes = where_notes(message, {"cli_args": tuple(overrides), "yaml_values": yaml_values, "yaml_path": path})
    return f"{message}\n{notes}" if notes else message


def where_notes(message: str, sources: dict[str, Any]) -> str:
    """`(where: GRPO_DATA__PATH is data.path, which this run sets by <source>; ...)` for the variables `message` names that the
    command line or the config file set (`sources`: `source_label`'s keyword arguments); "" for none."""
    by_variable = {env_var_name(tuple(p.split("."))): tuple(p.split(".")) for p in setting_paths()}
    notes = []
    for variable in dict.fromkeys(_VARIABLE.findall(message)):
        if (loc := by_variable.get(variable)) is None:
            continue
        label = source_label(loc, **sources)
        if label.upper().startswith(variable + "__"):
            # a dict setting set key by key: every key's variable, not one of them as if it were the culprit
            keys = sorted(k for k in os.environ if k.upper().startswith(variable + "__"))
            notes.append(f"{variable} is {'.'.join(loc)}, which this run sets key by key: {', '.join(keys)}")
        elif label.upper() != variable:  # the command line or the config file set it
            notes.append(f"{variable} is {'.'.join(loc)}, which this run sets by {label}")
        elif (sources.get("yaml_path") or sources.get("cli_args")) and variable not in map(str.upper, os.environ):
            notes.append(f"{variable} is {'.'.join(loc)}")  # a run set up by a file or flags (trial: YAML users)
    return f"(where: {'; '.join(notes)})" if notes else ""


def source_label(loc: tuple[Any, ...], cli_args: tuple[str, ...] = (), yaml_values: dict[str, Any] | None = None,
                 yaml_path: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """Where the value at `loc` came from, named as the user wrote it: `--train.max_steps on the command
    line`, the GRPO_* variable, or `config file 'c.yaml'`; the variable's name when no source set it (a
    default). Sources are asked in their precedence (CLI > environment > YAML); a section-level value
    (`--train='{...}'`) counts for every field in it. (A whole section in one environment variable is
    no setting: `unknown_env_names` refuses it first.)"""
    environ = os.environ if environ is None else environ
    parts = [str(p) for p in loc if not isinstance(p, int)]
    if not parts:
        return ENV_PREFIX.rstrip("_")
    field = parts[:2] if len(parts) > 1 and is_section_name(parts[0]) else parts[:1]
    candidates = [field, field[:1]] if len(field) > 1 else [field]
    given = {a[2:].split("=", 1)[0].replace("-", "_") for a in cli_args if a.startswith("--")}
    for names in candidates:
        if ".".join(names) in given:
            return f"--{'.'.join(names)} on the command line"
    upper = {k.upper(): k for k in environ}
    if env_var_name(loc) in upper:  # the variable of this very value (a key of a dict setting included)
        return upper[env_var_name(loc)]
    for names in candidates:
        var = env_var_name(tuple(names))
        # a dict setting's keys (`GRPO_REWARDS__FORMAT`) set the field; another field's variable of the same
        # section (`GRPO_TRAIN__MAX_STEPS` for train.learning_rate) says nothing about this one (second trial)
        found = [k for u, k in upper.items() if u == var or (names == field and u.startswith(var + "__"))]
        if found:
            return upper.get(var, found[0])
    node: Any = yaml_values or {}
    for name in field:
        if not isinstance(node, dict) or name not in node:
            break
        node = node[name]
    else:
        return f"config file {yaml_path!r}" if yaml_path else "the config file"
    return env_var_name(loc)


def replaced_dicts(yaml_values: dict[str, Any], settings: JobSettings, overrides: list[str], path: str | None) -> list[str]:
    """The keys of `rewards` and `train.extra` that the config file or the environment gave and a higher source
    dropped: a dict setting is taken whole from the highest source that sets it, so `GRPO_TRAIN__EXTRA='{...}'` drops
    the file's other keys, and `--rewards` the environment's (keys the environment gives one by one change the file's
    dict key by key instead: `sources.LayeredSource`)."""
    notes = []
    for loc in (("rewards",), ("train", "extra")):
        given, value = yaml_values, settings
        for part in loc:
            given, value = given.get(part) if isinstance(given, dict) else None, getattr(value, part)
        label = source_label(loc, tuple(overrides), yaml_values, path)
        cli = label.startswith("--")
        # the environment's keys one by one change the file's dict, each variable its own key (a `null` one removes
        # it, as asked): only a key's own whole variable replaces what the file has under it (trial AA)
        keyed = not cli and loc in key_by_key_dicts(JobSettings)
        env_names = {n.upper() for n in os.environ}
        # and a key's own dict (train.extra.generation_kwargs), and a reward's arguments (trial X: a whole
        # GRPO_REWARDS replaced the file's json_schema entry, its schema argument with it)
        places = [] if not isinstance(given, dict) or given == value else [(".".join(loc), given, value, label)] * (
            not keyed) + [
            (f"{'.'.join(loc)}.{k}", given[k], entry_keys(value[k]), label if cli else env_var_name(loc + (k,))
             if env_var_name(loc + (k,)) in env_names else _variables(loc + (k,)) or label)
            for k in sorted(set(given) & set(value)) if isinstance(given[k], dict) and entry_keys(value[k]) is not None
            and (not keyed or env_var_name(loc + (k,)) in env_names)]
        for name, was, now, label in places:
            if dropped := sorted(set(was) - set(now)):
                notes.append(f"{name} set by {label} replaces the config file's {name} whole, so the file's "
                             f"{', '.join(map(str, dropped))} {'is' if len(dropped) == 1 else 'are'} not used (a dict "
                             "setting is taken whole from the highest source that sets it; set them there too)")
        if cli and _environment_keys(loc):
            # the environment below the command line (trial: a Job's GRPO_REWARDS__FORMAT lost to --rewards; trial
            # AA: a weight's variable for a reward the flag lists too, lost without a word)
            lost = _variables(loc) or env_var_name(loc)
            notes.append(f"{'.'.join(loc)} set by {label} replaces the environment's {'.'.join(loc)} whole, so {lost} "
                         f"{'is' if ',' not in lost else 'are'} not used (a dict setting is taken whole from the highest "
                         "source that sets it; set them there too)")
    return notes


def _environment_keys(loc: tuple[str, ...]) -> set[str]:
    """The keys the environment gives the dict setting at `loc`: its variable's JSON object, or its keys' variables."""
    whole = next((v for n, v in os.environ.items() if n.upper() == env_var_name(loc)), None)
    if whole is not None:
        try:
            value = json.loads(whole)
        except ValueError:
            return set()
        return set(map(str, value)) if isinstance(value, dict) else set()
    prefix = env_var_name(loc) + "__"
    return {n[len(prefix):].split("__")[0].lower() for n in os.environ if n.upper().startswith(prefix)}


def _variables(loc: tuple[str, ...]) -> str:
    """The environment variables that set keys under `loc` (GRPO_TRAIN__EXTRA__GENERATION_KWARGS__SEED), by name."""
    prefix = env_var_name(loc) + "__"
    return ", ".join(sorted(n for n in os.environ if n.upper().startswith(prefix)))
