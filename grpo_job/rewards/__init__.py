"""Reward functions with TRL's signature, picked by name from a registry.

Each function takes `completions` (strings, or chat messages when prompts are conversational) plus
dataset columns as keyword arguments, and returns one float (or None: skipped) per completion.

- `builtin`: the answer-format rewards (`format`, `partial_format`, `correctness`, `integer_answer`);
- `code`: `code`, the model's program run against the row's tests in `grpo_job.sandbox`;
- `structured`: `json_schema`, the completion's JSON validated against a JSON Schema and compared field by
  field with the reference object;
- `limits`: the time limit every reward runs under (`health.reward_time_limit`).

Users add their own with `module:function` in the `rewards` setting, and TRL's own rewards
(`trl.rewards`) by their TRL name. A setting entry may carry keyword arguments (open-r1's
parameterised rewards): a `get_*` factory (TRL's convention, e.g. `get_soft_overlong_punishment`)
is called with them and returns the reward; a plain reward function gets them bound
(`functools.partial`, which TRL logs under the function's own name). `build` does that.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import json
import os
import pkgutil
import re
import typing
from collections.abc import Mapping
from typing import Any

import pydantic

from grpo_job import answers
from grpo_job.rewards import code, structured
from grpo_job.rewards.builtin import (
    RewardFunc,
    completion_text,
    correctness_reward,
    extract_answer,
    format_reward,
    integer_answer_reward,
    partial_format_reward,
)
from grpo_job.rewards.code import code_reward
from grpo_job.rewards.limits import callable_name, is_async
from grpo_job.rewards.structured import json_schema_reward

__all__ = [
    "ALIASES", "REGISTRY", "TRL_REWARDS", "RewardFunc", "build", "build_all", "callable_name", "code_reward",
    "completion_text", "distinct_names", "correctness_reward", "extract_answer", "format_reward", "integer_answer_reward", "is_async",
    "is_factory", "json_schema_reward", "named", "partial_format_reward", "resolve", "weight",
]

REGISTRY: dict[str, RewardFunc] = {
    "format": format_reward,
    "partial_format": partial_format_reward,
    "correctness": correctness_reward,
    "integer_answer": integer_answer_reward,
    "code": code_reward,
    "json_schema": json_schema_reward,
}

# The job's rewards that read columns of their own, with the check of every row they read: (rows, the entry's
# arguments) -> [(row index, what is wrong)], run before any model is loaded (calls.check_reward_rows).
ROW_CHECKS: dict[Any, Any] = {code_reward: code.unreadable_rows, json_schema_reward: structured.unreadable_rows}
# the argument naming the column each of them reads (its default is the parameter's)
ROW_COLUMNS: dict[Any, str] = {code_reward: "tests_column", json_schema_reward: "schema_column"}
# an argument that, given, stands in for that column (one schema for every row): the column is then not read
ROW_COLUMN_STAND_INS: dict[Any, str] = {json_schema_reward: "json_schema"}
# rows a reward reads but where no completion can earn its whole score: warned of, not refused
ROW_NOTES: dict[Any, Any] = {json_schema_reward: structured.off_schema_references}

# TRL's built-in rewards (trl.rewards, trl 1.15), usable by their TRL name; `get_*` are factories.
TRL_REWARDS = (
    "accuracy_reward", "reasoning_accuracy_reward", "think_format_reward",
    "get_cosine_scaled_reward", "get_repetition_penalty_reward", "get_soft_overlong_punishment",
)
# Short names for TRL's parameterised rewards, as open-r1 names them in its recipes.
ALIASES = {
    "soft_overlong": "get_soft_overlong_punishment",
    "repetition_penalty": "get_repetition_penalty_reward",
    "cosine_scaled": "get_cosine_scaled_reward",
}


def resolve(name: str) -> RewardFunc:
    """A registry name, a TRL reward name (or its alias), or `module:function` -> the function (for a
    `get_*` factory: the factory). Raises LookupError/ImportError with the fix."""
    if name in REGISTRY:
        return REGISTRY[name]
    trl_name = ALIASES.get(name, name)
    if trl_name in TRL_REWARDS:
        return getattr(importlib.import_module("trl.rewards"), trl_name)
    if ":" not in name:
        raise LookupError(f"unknown reward {name!r}{_meant(name)}: use one of {sorted(REGISTRY)}, a TRL reward "
                          f"{sorted(TRL_REWARDS)} (or {sorted(ALIASES)}), or module:function")
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # an ImportError, or any error raised while the user's module runs
        where = ""
        if module_name.endswith(".py") and isinstance(e, ModuleNotFoundError):  # a file name where a module's goes
            where = f"; name the module without .py: {module_name.removesuffix('.py').replace('/', '.')}:{attr}"
        elif isinstance(e, ModuleNotFoundError) and e.name == module_name.split(".")[0]:
            # the module itself is not found (not one it imports): where Python looks is what to fix
            close = difflib.get_close_matches(module_name, _own_modules(), n=1, cutoff=0.8)
            where = (f"; did you mean {close[0]}:{attr}?" if close else
                     f"; Python finds modules on PYTHONPATH: put {module_name.replace('.', '/')}.py in a folder on it "
                     "(e.g. PYTHONPATH=. beside the file, or mount it in the container and set PYTHONPATH there)")
        raise ImportError(f"reward {name!r}: cannot import module {module_name!r} ({type(e).__name__}: {e}){where}") from e
    func = getattr(module, attr, None)
    if not callable(func):
        there = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")]
        close = difflib.get_close_matches(attr, there, n=1)
        hint = f"; did you mean {module_name}:{close[0]}?" if close else (
            f"; its functions: {', '.join(sorted(there)[:12])}" if there else "")
        raise ImportError(f"reward {name!r}: module {module_name!r} has no function {attr!r}{hint}")
    return func


def _meant(name: str) -> str:
    """`; did you mean ...?` for an unknown reward name without `:` (settings.rewards.unknown_reward_hint)."""
    from grpo_job.settings.rewards import unknown_reward_hint

    hint = unknown_reward_hint(name).rstrip()
    return f"; {hint}" if hint else ""


def argument_hint(name: str, value: Any, entries: Mapping[str, Any] | None = None, by_variable: bool = False) -> str:
    """`; 'x' is an argument of the code reward, not a reward: ...` when a `rewards` key `name` is a keyword argument
    of built-in rewards (trial Y: `{"code": 1.0, "tests_column": "checks"}`, one level too high); "" otherwise.
    `entries`: the rewards given beside it, whose entry for the reward keeps its weight and arguments (trial Z);
    `by_variable`: it came as a variable of its own, so the variable to set is the answer (trial Z)."""
    owners = [reward for reward, func in REGISTRY.items()
              if name not in ("completions", "prompts", "kwargs") and name in inspect.signature(func).parameters]
    if not owners:
        return ""
    owner = next((o for o in owners if o in (entries or {})), owners[0])
    if by_variable:
        return (f"; {name!r} is an argument of the {' or '.join(owners)} reward, not a reward: set "
                f"GRPO_REWARDS__{owner.upper()}__{name.upper()} instead")
    from grpo_job.settings.rewards import entry_keys

    kept = entry_keys((entries or {}).get(owner))
    entry = json.dumps({owner: {**(kept or {}), name: value}}, default=str)
    return (f"; {name!r} is an argument of the {' or '.join(owners)} reward, not a reward: it goes in that reward's "
            f"entry, {entry}{'' if kept is not None else ' (beside its weight and other arguments)'}")


def _own_modules() -> list[str]:
    """The top-level modules in the working directory and on PYTHONPATH: the user's own, for a close name to a
    misspelt reward module (trial: `mcq_rewards` for `mcq_reward`), not every installed package's."""
    paths = [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return sorted({m.name for m in pkgutil.iter_modules(paths)})


def is_factory(func: Any) -> bool:
    """A `get_*` function returns the reward rather than being one (TRL's and open-r1's convention); a class
    (`my_rewards:LabelMatch`) is built with the entry's arguments, and its instance is the reward (trial: the class
    itself was called as the reward)."""
    return inspect.isclass(func) or (inspect.isfunction(func) and func.__name__.startswith("get_"))


def build(name: str, kwargs: Mapping[str, Any] | None = None, answer_type: answers.AnswerType = "auto") -> RewardFunc:
    """The reward TRL will call for one `rewards` entry: the factory called with `kwargs`, or the
    function with `kwargs` bound. A reward that takes `answer_type` gets `data.answer_type` unless
    the entry sets it; TRL's math rewards read their `solution` as `with_solution` gives it. Raises TypeError
    naming the reward when the keyword arguments do not fit."""
    built = _build(name, kwargs, answer_type)
    if ALIASES.get(name, name) in TRL_REWARDS and "solution" in (_parameters(built) or {}):
        return with_solution(built)
    return built


# math-verify reads a whole expression inside these; without them its default parse reads LaTeX only in part
_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed")


_ANSWER_CHARS = 100  # longer, or on several lines, a solution is a worked one, not a final answer


def delimited_solution(text: str) -> str:
    """`text` as math-verify's default `parse` reads all of it: a final answer in LaTeX without delimiters
    (`2\\sqrt{3}`: one line of at most 100 characters) inside `$...$`; text that has `$`, `\\(`, `\\[` or `\\boxed`
    (MATH's solutions), or a worked solution, as it is. Undelimited, math-verify
    read `2\\sqrt{3}` as 2, `(-2, 2)` as 2, `x^2 + 2x + 1` as 1 and `\\sqrt{2}` as nothing, so TRL's accuracy_reward
    paid `\\boxed{2}` for `2\\sqrt{3}` and skipped the rest (trial)."""
    # a final answer, one short line; a worked solution in words stays as TRL would read it
    short = len(text.strip()) <= _ANSWER_CHARS and "\n" not in text.strip()
    return f"${text.strip()}$" if short and not _DELIMITED.search(text) else text


def with_solution(func: RewardFunc) -> RewardFunc:
    """TRL's math reward `func` (`accuracy_reward`, `reasoning_accuracy_reward`, the cosine-scaled one), reading
    the data's `solution` column, or the row's reference `answer` (the job's name for it) when the data has none,
    each as `delimited_solution` gives it. TRL logs it under `func`'s name; its signature takes neither column as
    required, so `check` asks the data for none of them."""
    def call(completions: list[Any], solution: list[Any] | None = None, answer: list[Any] | None = None,
             **kwargs: Any) -> Any:
        given = solution if solution is not None else answer
        if given is None:
            raise TypeError(f"{callable_name(func)} needs the reference solution: a `solution` or `answer` column")
        return func(completions, solution=[delimited_solution(str(v)) for v in given], **kwargs)

    call.__name__ = call.__qualname__ = callable_name(func)
    call.__doc__ = getattr(func, "__doc__", None)
    return call


def _build(name: str, kwargs: Mapping[str, Any] | None, answer_type: answers.AnswerType) -> RewardFunc:
    func = resolve(name)
    kwargs = dict(kwargs or {})
    if is_factory(func):
        signature = inspect.signature(func)
        unknown = sorted(set(kwargs) - set(signature.parameters))
        try:
            if unknown:
                raise TypeError(f"unknown argument(s) {unknown}{_closest(unknown, signature.parameters)}")
            signature.bind(**kwargs)
        except TypeError as e:
            raise TypeError(f"reward {name!r} ({func.__name__}) needs its arguments in the entry: {e}; "
                            f"its signature is {func.__name__}{signature}{_also_mistyped(name, func, kwargs, unknown)}"
                            ) from None
        return func(**_typed(name, func, kwargs))
    params = _parameters(func)
    if params is not None and "answer_type" in params and not isinstance(kwargs.get("answer_type", ""), str):
        # the reward's list form is one type per row, which only a dataset column can give: a list bound here
        # would be zipped with the completions of every batch (zip() argument 3 is shorter)
        raise TypeError(f"reward {name!r}: answer_type={kwargs['answer_type']!r} in its entry is one value for every "
                        f"row: set rewards.{name}.answer_type to auto, math or exact; for one type per row, give the "
                        "data a column named answer_type instead (TRL passes it to the reward per row)")
    if params is not None and "answer_type" in params and "answer_type" not in kwargs:
        kwargs["answer_type"] = answer_type
    if not kwargs:
        return func
    if params is not None:
        # named parameters only: every reward takes **kwargs (TRL's columns), which would swallow a typo
        named = {k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        unknown = sorted(set(kwargs) - named)
        if unknown:
            raise TypeError(f"reward {name!r} takes no argument(s) {unknown}{_closest(unknown, named)}; its signature is "
                            f"{getattr(func, '__name__', name)}{inspect.signature(func)}"
                            f"{_also_mistyped(name, func, kwargs, unknown)}")
    return functools.partial(func, **_typed(name, func, kwargs))


def _typed(name: str, func: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` checked against the parameters' annotations and converted by pydantic (lax: `"512"` ->
    512, as an environment variable gives it; a boolean is never a number). A parameter without an
    annotation but with a number or bool default converts a string value to that kind, and refuses a
    boolean for a number; any other value passes as it is.
    Raises TypeError naming the reward and, for every argument that does not fit, the type it takes and
    the value given."""
    # a class takes its arguments in __init__; an instance in __call__
    target = func.__init__ if isinstance(func, type) else func if inspect.isroutine(func) else type(func).__call__
    try:
        hints = typing.get_type_hints(target, include_extras=True)  # Annotated bounds (gt=0) are checked too
    except (NameError, TypeError):  # annotations naming what cannot be imported here: the defaults still help
        hints = {}
    params = _parameters(func) or {}
    out, wrong = dict(kwargs), []
    for key, value in kwargs.items():
        wanted = hints.get(key)
        default = params[key].default if key in params else inspect.Parameter.empty
        if wanted is None and isinstance(value, (str, bool)) and isinstance(default, (bool, int, float)):
            wanted = {bool: bool, int: int | float, float: float}[type(default)]
        if wanted is None:
            continue
        try:
            adapter = pydantic.TypeAdapter(wanted)
        except pydantic.PydanticUserError:  # a type pydantic cannot check (an arbitrary class): pass it on
            continue
        try:
            # a boolean is no number (YAML's `yes` passed as 1.0 for a float; weights refuse it too): strict for bools
            out[key] = adapter.validate_python(value, strict=True if isinstance(value, bool) else None)
        except pydantic.ValidationError as e:
            error = e.errors()[0]
            if error["type"] == "value_error":  # the parameter's own validator says what is wrong (json_schema)
                wrong.append(f"argument {key}: {error['ctx']['error']}; set rewards.{name}.{key}")
                continue
            base = typing.get_args(wanted)[0] if typing.get_origin(wanted) is typing.Annotated else wanted
            kind = base.__name__ if isinstance(base, type) else str(base).replace("typing.", "")
            wrong.append(f"argument {key}={value!r} does not fit its type {kind} ({error['msg']}); set "
                         f"rewards.{name}.{key} to a value of that type")
    if wrong:  # every argument that does not fit, in one message
        raise TypeError(f"reward {name!r}: " + "; ".join(wrong))
    return out


def _closest(unknown: list[str], names: Any) -> str:
    """` (did you mean 'tests_column'?)` for the first unknown argument with a close parameter name."""
    for wrong in unknown:
        if close := difflib.get_close_matches(wrong, list(names), n=1, cutoff=0.75):
            return f" (did you mean {close[0]!r} for {wrong!r}?)"
    return ""


def _also_mistyped(name: str, func: Any, kwargs: Mapping[str, Any], unknown: list[str]) -> str:
    """The type problems of the arguments that are known, for the message about the unknown ones: every
    problem of an entry in one `check`."""
    try:
        _typed(name, func, {k: v for k, v in kwargs.items() if k not in unknown})
    except TypeError as e:
        return "; also " + str(e).removeprefix(f"reward {name!r}: ")
    return ""


def _parameters(func: Any) -> Mapping[str, inspect.Parameter] | None:
    try:
        return inspect.signature(func).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature: nothing to check
        return None


def log_names(built: dict[str, Any]) -> dict[str, str]:
    """Settings name -> the name TRL logs the reward under, for rewards built by `build_all`."""
    return {name: callable_name(func) for name, func in built.items()}


def weight(entry: Any) -> float:
    """The weight of a `rewards` setting value: a number, an entry's `weight`, or the `weight` key of
    an entry as saved in settings.json (a dict; 1.0 when absent, the entry's default)."""
    if isinstance(entry, Mapping):
        return float(entry.get("weight", 1.0))
    return float(getattr(entry, "weight", entry))


def build_all(entries: Mapping[str, Any], answer_type: answers.AnswerType = "auto") -> dict[str, RewardFunc]:
    """Every `rewards` setting entry built (see `build`), by its name in the settings, in order."""
    return {name: build(name, getattr(entry, "kwargs", None), answer_type) for name, entry in entries.items()}


def distinct_names(built: dict[str, RewardFunc]) -> dict[str, RewardFunc]:
    """`built` (by settings name) with the rewards that TRL would log under one name (functions named alike in
    two modules: `a:score`, `b:score`) renamed to their settings names (`named`): TRL keys its metrics by name,
    so their curves, and the health guards reading them, would have been one (trial). The run's rewards
    (`RunContext.rewards`)."""
    logged = log_names(built)
    clashing = {n for n in logged.values() if list(logged.values()).count(n) > 1}
    return {name: named(func, name) if logged[name] in clashing else func for name, func in built.items()}


def named(func: RewardFunc, name: str) -> RewardFunc:
    """`func` as a function called `name` (what TRL logs a function reward under); async stays async, and
    `inspect.signature` still reads `func`'s parameters (`__wrapped__`)."""
    if is_async(func):
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await func(*args, **kwargs)
    else:
        def call(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)
    functools.update_wrapper(call, func)  # __wrapped__: inspect.signature gives the reward's own (as limits.limited)
    call.__name__ = call.__qualname__ = name
    return call
