"""Checks of the settings against the machine the job runs on: the second validation layer.

The schema (the sections, `rules`) validates the values alone and runs anywhere, e.g. on a CI runner
that renders a Kubernetes Job and has neither the data volume nor the ML stack. What only the pod can
answer is checked here, by `check` and `run`, before any model is loaded: local files exist, reward
modules import, trackers and DeepSpeed are installed, `train.extra` names GRPOConfig arguments.
Each problem is worded as the schema's are: what is wrong, why, what to set.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from grpo_job.settings.data import is_local_data_path, saved_dataset

if TYPE_CHECKING:
    from grpo_job.settings.root import JobSettings


def problems(s: JobSettings) -> list[str]:
    """Every problem found, one message each (empty when the machine can run these settings)."""
    return [*_local_files(s), *_rewards(s), *_packages(s), *_grpo_config_extra(s)]


def _local_files(s: JobSettings) -> list[str]:
    out = []
    for where, env, path, elsewhere in (
            ("data.path", "GRPO_DATA__PATH", s.data.path, ", an s3:// object or a Hub dataset"),
            ("evaluation.data_path", "GRPO_EVALUATION__DATA_PATH", s.evaluation.data_path, "")):
        local = Path(path.removeprefix("file://")) if path else None
        saved = saved_dataset(path) if path else None
        if path and local.is_dir() and saved is None:
            out.append(f"{where} [{env}]: {path!r} is a folder, and not one written by datasets' save_to_disk (no "
                       "state.json or dataset_dict.json in it); the job reads one data file (.jsonl, .json, .csv or "
                       f".parquet) or such a folder: point {env} at one of the folder's files")
        elif where == "evaluation.data_path" and saved == "dataset_dict":
            out.append(f"{where} [{env}]: {path!r} is a saved DatasetDict (several splits); point {env} at the "
                       f"folder of one split, e.g. {str(local / 'test')!r}")
        elif path and is_local_data_path(path) and not local.exists():
            out.append(f"{where} [{env}]: local data file {path!r} does not exist on this machine (mount it, or "
                       f"point the setting at an existing file{elsewhere})")
    return out


def _rewards(s: JobSettings) -> list[str]:
    """Import and build every reward: a module that does not import, a function that is not there, a
    factory's or a function's keyword arguments that do not fit its signature (TRL's own checks run)."""
    from grpo_job import rewards
    from grpo_job.settings.rewards import RewardEntry

    out = []
    for name, entry in s.rewards.items():
        try:
            rewards.build(name, entry.kwargs if isinstance(entry, RewardEntry) else None, s.data.answer_type)
        except (LookupError, ImportError, TypeError, ValueError, RuntimeError) as e:
            # RuntimeError: TRL's lazy module wraps its rewards' ImportError (math-verify missing) in one
            out.append(f"rewards [GRPO_REWARDS]: {e}{_lost_case_hint(name) if isinstance(e, ImportError) else ''}")
    return out


def _lost_case_hint(name: str) -> str:
    """pydantic-settings reads environment variable names in lower case, so `GRPO_REWARDS__MyMod:score`
    names the reward `mymod:score`: say so when such a variable is behind a reward that did not import."""
    prefix = "GRPO_REWARDS__"
    for key in os.environ:
        if key.upper().startswith(prefix):
            written = key[len(prefix):].split("__")[0]
            if written.lower() == name and written != name:
                return (f" (the environment variable {key} names it in lower case: variable names lose their "
                        f"case; set GRPO_REWARDS as JSON, e.g. GRPO_REWARDS='{{\"{written}\": 1.0}}', to keep it)")
    return ""


# TRL's rewards that compare answers with math-verify themselves.
_TRL_MATH_REWARDS = ("accuracy_reward", "reasoning_accuracy_reward")


def _importable(module: str) -> str | None:
    """None when `module` imports; else why not (a missing dependency of it included)."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as e:
        return f"{type(e).__name__}: {e}"
    return None


def _dependencies(s: JobSettings) -> list[str]:
    """A configured feature whose package is missing or broken: found here, before a GPU minute, not as
    wrong scores or a crash mid-run."""
    out = []
    needs_math = s.data.answer_type != "exact" or any(n in _TRL_MATH_REWARDS for n in s.rewards)
    if needs_math and (why := _importable("math_verify")):
        users = ("data.answer_type=" + s.data.answer_type) if s.data.answer_type != "exact" else \
            "rewards " + ", ".join(n for n in s.rewards if n in _TRL_MATH_REWARDS)
        out.append(f"math-verify cannot be imported ({why}), but {users} compares answers with it (the "
                   "correctness reward, the evaluation and the data check): without it every answer outside "
                   "plain numbers would score 0; pip install math-verify==0.9.0 (it is a dependency of this "
                   "package: reinstall it), or set GRPO_DATA__ANSWER_TYPE=exact for string answers")
    if s.model.gguf_file and importlib.util.find_spec("gguf") is None:
        out.append(f"model.gguf_file={s.model.gguf_file!r} is read with transformers' GGUF loader, which needs the "
                   "gguf package: pip install gguf==0.19.0, or point GRPO_MODEL__NAME_OR_PATH at a safetensors model")
    vllm_for = ("model.engine=unsloth (Unsloth generates with vLLM: fast_inference)" if s.model.engine == "unsloth"
                else "distributed.vllm_mode=server (TRL's client of trl vllm-serve)" if s.distributed.vllm_mode == "server"
                else None)
    if vllm_for and importlib.util.find_spec("vllm") is None:
        out.append(f"{vllm_for} needs vLLM, which is not installed: pip install '.[gpu]' (vllm==0.26.0)")
    return out


def _packages(s: JobSettings) -> list[str]:
    out = _dependencies(s)
    missing = [t for t in s.report.report_to if importlib.util.find_spec(t) is None]
    if missing:
        out.append(f"report.report_to names {missing} but the package is not installed: pip install "
                   f"{' '.join(missing)}, or remove it from GRPO_REPORT__REPORT_TO")
    if s.distributed.strategy == "zero3" and importlib.util.find_spec("deepspeed") is None:
        out.append("distributed.strategy=zero3 needs DeepSpeed: pip install deepspeed, or set "
                   "GRPO_DISTRIBUTED__STRATEGY=fsdp")
    return out


def _grpo_config() -> type:
    from trl import GRPOConfig

    return GRPOConfig


def grpo_config_fields() -> set[str]:
    """The argument names of the installed TRL's GRPOConfig."""
    return {f.name for f in dataclasses.fields(_grpo_config()) if f.init}


# GRPOConfig arguments whose annotation says less than what TRL documents and accepts: "scale_rewards (`str` or
# `bool`)" takes "group", "batch", "none", True or False; the strings with a documented set of values; the
# sampling and clipping numbers with a range. Any other value passed `check` and raised only mid-run (TRL at the
# first loss step, vLLM's SamplingParams, transformers' GenerationConfig), or did nothing (new-user trials).
_DOCUMENTED_TYPES: dict[str, Any] = {
    "scale_rewards": Literal["group", "batch", "none"] | bool,
    "importance_sampling_level": Literal["token", "sequence"],
    "multi_objective_aggregation": Literal["sum_then_normalize", "normalize_then_sum"],
    "vllm_importance_sampling_mode": Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"],
    "top_p": Annotated[float, Field(gt=0, le=1)],
    "min_p": Annotated[float, Field(ge=0, le=1)] | None,
    "repetition_penalty": Annotated[float, Field(gt=0)],
    "num_iterations": Annotated[int, Field(ge=1)],
    "epsilon": Annotated[float, Field(ge=0)],
    "epsilon_high": Annotated[float, Field(ge=0)] | None,
    "top_k": Annotated[int, Field(ge=0)],  # 0 turns it off (TRL); -1 is vLLM's spelling, refused by transformers
    # TRL also takes a JSON text for these (`dict | str`); text that is no JSON failed mid-run (the job's own
    # reader turns a variable's `{...}` into a mapping already)
    "generation_kwargs": dict[str, Any] | None,
    "chat_template_kwargs": dict[str, Any] | None,
}


def _values_not_any_text(tp: Any) -> Any:
    """transformers annotates its strategies `IntervalStrategy | str` (any text passes; `No` or `stepz` raised
    when GRPOConfig was built, mid-`run`): the enum's own values instead."""
    import enum
    import types
    import typing

    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return tp
    args = typing.get_args(tp)
    enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
    if not enums or str not in args:
        return tp
    values = tuple(m.value for e in enums for m in e)
    rest = [a for a in args if a is not str and a not in enums]
    return typing.Union[Literal[values], *rest] if rest else Literal[values]  # noqa: UP007 - built from a tuple


@functools.cache
def _extra_types() -> dict[str, Any]:
    """GRPOConfig's argument types as `check` and the conversion hold values to (read once per process)."""
    import typing

    hints = {name: _values_not_any_text(tp) for name, tp in typing.get_type_hints(_grpo_config()).items()}
    return hints | _DOCUMENTED_TYPES


# The common keys of `generation_kwargs` (vLLM's SamplingParams, transformers' GenerationConfig), checked and
# converted like GRPOConfig's own arguments: neither checks a value's type (a msgspec struct, a config object),
# so the text "no" would have been a true `skip_special_tokens` and a stop string of False passed (trials).
_GENERATION_KWARGS_TYPES: dict[str, Any] = {
    "stop": str | list[str], "bad_words": list[str], "stop_token_ids": list[int],
    "min_tokens": Annotated[int, Field(ge=0)], "seed": int | None, "logprobs": Annotated[int, Field(ge=0)],
    **{key: bool for key in ("ignore_eos", "detokenize", "skip_special_tokens", "include_stop_str_in_output",
                             "spaces_between_special_tokens", "flat_logprobs", "do_sample")},
}


# chat_template_kwargs keys the common chat templates read, checked the same way (`enable_thinking: flase` passed)
_CHAT_TEMPLATE_KWARGS_TYPES: dict[str, Any] = {"enable_thinking": bool}


def generation_kwargs_names(s: JobSettings, *, vllm: bool) -> tuple[list[str], list[str]]:
    """(problems, warnings) for the names in `train.extra.generation_kwargs`. `vllm`: vLLM generates (the trl
    engine on a GPU with vLLM, unsloth): a name that is no SamplingParams field is refused, with the closest
    one (vLLM raises at the first generation step). Else transformers' generate gets them through a
    GenerationConfig, which keeps any name and uses only its own: the others are warned of (vLLM's `stop`,
    `min_tokens`, `seed` do nothing there; its names are `stop_strings`, `min_new_tokens`)."""
    import difflib

    kwargs = s.train.extra.get("generation_kwargs")
    if not isinstance(kwargs, dict) or not kwargs:
        return [], []
    if vllm:
        known = sampling_params_fields((Path(importlib.util.find_spec("vllm").origin).parent /
                                        "sampling_params.py").read_text())
        out = []
        for name in sorted(set(kwargs) - known):
            close = difflib.get_close_matches(name, sorted(known), n=1)
            out.append(f"train.extra.generation_kwargs: {name!r} is not an argument of vLLM's SamplingParams"
                       f"{f'; did you mean {close[0]!r}?' if close else ''} (vLLM would refuse it at the first "
                       "generation step)")
        return out, []
    from transformers import GenerationConfig

    unused = sorted(set(kwargs) - set(GenerationConfig().to_dict()))
    if not unused:
        return [], []
    return [], [f"train.extra.generation_kwargs: {', '.join(map(repr, unused))} do nothing here: transformers' "
                "generate runs (no vLLM on this machine or engine), and its GenerationConfig ignores names it does "
                "not know (its own: stop_strings, min_new_tokens, ...); under vLLM they are SamplingParams arguments"]


def sampling_params_fields(source: str) -> set[str]:
    """The fields of vLLM's `SamplingParams` (a msgspec struct: its annotated class attributes), read from the
    source of `vllm/sampling_params.py`: importing vLLM in `check` would cost seconds and start its platform
    detection in the job's process."""
    import ast

    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == "SamplingParams":
            return {a.target.id for a in node.body if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name)
                    and not a.target.id.startswith("_")}
    return set()


def _adapter(tp: Any) -> Any:
    """A validator of `tp` that also takes a number for text (`run_name: 2024`, a YAML file's number), as
    GRPOConfig would have it, and no `inf` or `nan` for a number (as every section's own fields)."""
    from pydantic import ConfigDict, TypeAdapter

    return TypeAdapter(tp, config=ConfigDict(coerce_numbers_to_str=True, allow_inf_nan=False))


def _convert(tp: Any, value: Any) -> Any:
    """`value` as type `tp` (pydantic's ValidationError when it is none of it). A variable's text
    (`settings.sources.read_env_text` leaves a top-level one as written) is taken as it is where the type
    takes it (`0.95`, `no`, `010` for text), as `null` where the type takes None, else as YAML would read it
    (`2.0` for an integer)."""
    from pydantic import ValidationError

    from grpo_job.settings.sources import NULLS, read_env_text

    adapter = _adapter(tp)
    if isinstance(value, str) and value.strip() in NULLS:
        try:
            return adapter.validate_python(None)
        except ValidationError:
            pass
    try:
        return adapter.validate_python(value)
    except ValidationError:
        read = read_env_text(value, typed=False) if isinstance(value, str) else value
        if read == value:
            raise
        return adapter.validate_python(read)


def _convert_kwargs(kwargs: Any, types: dict[str, Any]) -> Any:
    if not isinstance(kwargs, dict):
        return kwargs
    return {k: _convert(types[k], v) if k in types else v for k, v in kwargs.items()}


def grpo_config_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """`train.extra` as GRPOConfig gets it: each value converted to its argument's type (`"3e-1"` -> 0.3,
    `"false"` -> False, as `check` validated it; a dataclass converts nothing, so TRL would add a string to a
    number at the first loss step, and read the string "false" as true). Names GRPOConfig lacks stay as given
    (`check` refuses them)."""
    from pydantic import ValidationError

    types, out = _extra_types(), {}
    for name, value in extra.items():
        try:
            out[name] = _convert(types[name], value) if name in types else value
            if name == "generation_kwargs":
                out[name] = _convert_kwargs(out[name], _GENERATION_KWARGS_TYPES)
            elif name == "chat_template_kwargs":
                out[name] = _convert_kwargs(out[name], _CHAT_TEMPLATE_KWARGS_TYPES)
        except ValidationError:
            out[name] = value  # `check` names it; GRPOConfig's own error follows
    return out


def _grpo_config_extra(s: JobSettings) -> list[str]:
    if not s.train.extra:
        return []
    import difflib

    import trl

    fields = grpo_config_fields()
    out = []
    for name in s.train.extra:
        if name not in fields:
            close = difflib.get_close_matches(name, sorted(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            out.append(f"train.extra [GRPO_TRAIN__EXTRA]: {name!r} is not a GRPOConfig argument of the installed "
                       f"TRL {trl.__version__}{hint}")
    # the values against GRPOConfig's own annotations (a dataclass does not check them; vLLM would, mid-run)
    from pydantic import ValidationError

    hints = _extra_types()
    checks = [(name, value, hints[name]) for name, value in s.train.extra.items() if name in hints]
    for key, types in (("generation_kwargs", _GENERATION_KWARGS_TYPES), ("chat_template_kwargs",
                                                                       _CHAT_TEMPLATE_KWARGS_TYPES)):
        given = s.train.extra.get(key)
        if isinstance(given, dict):
            checks += [(f"{key}.{k}", v, types[k]) for k, v in given.items() if k in types]
    for name, value, tp in checks:
        try:
            _convert(tp, value)
        except ValidationError as e:
            why = e.errors(include_url=False)[0]["msg"]
            if isinstance(value, (bool, datetime.date)):  # a YAML file's unquoted no, on, 2024-01-01, before we see it
                why += (f"; YAML reads an unquoted no, off, yes, on or a date as a {type(value).__name__}: quote it "
                        f"in the file ({name.split('.')[-1]}: \"{value if not isinstance(value, bool) else 'no'}\")")
            whose = {"generation_kwargs": "vLLM's", "chat_template_kwargs": "the chat template's"}.get(
                name.split(".")[0], "GRPOConfig's")
            out.append(f"train.extra [GRPO_TRAIN__EXTRA]: {name}={value!r} does not fit {whose} "
                       f"{name.split('.')[-1]} ({_type_name(tp)}): {why}")
    return out


def _type_name(tp: object) -> str:
    """`float`, `float | None`, `'token' or 'sequence'`: an annotation as a message names it (no metadata)."""
    import types
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " or ".join(map(repr, args))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    return "None" if tp is type(None) else getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
