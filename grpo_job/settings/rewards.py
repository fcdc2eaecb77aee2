"""The values of the `rewards` setting: the built-in reward names, and a reward's weight or its entry
(weight and keyword arguments). The `rewards` field itself is the root model's (`settings.root`)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, TypeAdapter, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError

# Reward names grpo_job.rewards knows, kept here so validating settings imports no reward code
# (tests/test_settings.py checks the two agree).
BUILTIN_REWARDS = (
    "format", "partial_format", "correctness", "integer_answer", "code", "json_schema",  # grpo_job.rewards.REGISTRY
    "accuracy_reward", "reasoning_accuracy_reward", "think_format_reward",  # TRL's, by their TRL names
    "get_cosine_scaled_reward", "get_repetition_penalty_reward", "get_soft_overlong_punishment",
    "soft_overlong", "repetition_penalty", "cosine_scaled",  # short names of TRL's parameterised ones
)


def entry_keys(value: Any) -> dict[str, Any] | None:
    """A `rewards` value (or any dict setting's value) as a dict: a dict as it is, a model's fields and extras (a
    RewardEntry), a number as the weight it is; None for anything else."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, BaseModel):
        return value.model_dump()
    return {"weight": value} if isinstance(value, int | float) and not isinstance(value, bool) else None


def unknown_reward_hint(name: str, sections: tuple[str, ...] = ()) -> str:
    """What an unknown reward name (no `:`) was likely meant to be, as `did you mean ...? ` ("" for nothing close),
    from the name alone: `module.function` for `module:function` (trial), a settings section (`sections`) indented
    under `rewards` in a YAML file (trial), or the closest built-in reward."""
    module, _, function = name.rpartition(".")
    if module in BUILTIN_REWARDS and function:  # `json_schema.weight` (trial X): a key of the reward's own entry
        return (f"did you mean {module}: {{{function}: ...}}? (a reward's weight and arguments are keys of its own "
                f'entry: {{"{module}": {{"{function}": ...}}}}) ')
    # `code_weight`, one `_` where the entry's key was meant (trial Z: a variable GRPO_REWARDS__CODE_WEIGHT)
    owner = next((b for b in BUILTIN_REWARDS if name == f"{b}_weight"), None)
    if owner is not None:
        return (f"did you mean {owner}: {{weight: ...}}? (a reward's weight and arguments are keys of its own "
                f'entry: {{"{owner}": {{"weight": ...}}}}) ')
    longer = [b for b in BUILTIN_REWARDS if b.startswith(name + "_")]  # `partial`: the variable's `__` split it
    if len(longer) == 1:
        return f"did you mean {longer[0]!r}? "
    if module and function.isidentifier() and all(p.isidentifier() for p in module.split(".")):
        return f"did you mean {module}:{function}? (a function of a module of your own is named module:function) "
    if name in sections:
        return (f"{name!r} is a section of the settings, not a reward: in a YAML file, is it indented under "
                "rewards? (sections start at the line's beginning) ")
    close = difflib.get_close_matches(name, BUILTIN_REWARDS, n=1, cutoff=0.75)
    return f"did you mean {close[0]!r}? " if close else ""


def _not_bool(value: Any) -> Any:
    # YAML's `format: yes` became weight 1, where the environment's `on` was refused (trial): a weight is a number
    if isinstance(value, bool):
        raise ValueError("a weight is a number, not a boolean")
    return value


Weight = Annotated[float, BeforeValidator(_not_bool)]


class RewardEntry(BaseModel):
    """One `rewards` entry with arguments (open-r1's parameterised rewards), e.g.
    `soft_overlong: {weight: 1.0, max_completion_len: 384, soft_punish_cache: 48}`: `weight` is
    TRL's `reward_weights` entry, every other key a keyword argument of the reward (of its `get_*`
    factory for TRL's parameterised rewards), checked against its signature."""

    model_config = ConfigDict(extra="allow")

    weight: Weight = 1.0

    @property
    def kwargs(self) -> dict[str, Any]:
        """The reward's keyword arguments: every key but `weight`."""
        return dict(self.model_extra or {})


_WEIGHT = TypeAdapter(Weight)
_ENTRY_EXAMPLE = "{weight: 1.0, <argument>: <value>, ...}"


def _weight_or_entry(value: Any, handler: Any) -> float | RewardEntry:
    """A `rewards` value is a number (the weight) or an entry mapping. A plain union would report a bad
    value twice, under pydantic's branch names (`rewards.format.float`, `rewards.format.RewardEntry`):
    this reports it once, at the reward's own path, with the two forms it can take."""
    if isinstance(value, (RewardEntry, Mapping)):
        try:
            return RewardEntry.model_validate(value)
        except ValidationError as e:
            detail = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise PydanticCustomError("reward_entry", "{detail} (an entry is {example})",
                                      {"detail": detail, "example": _ENTRY_EXAMPLE}) from None
    try:
        return _WEIGHT.validate_python(value)
    except ValidationError:
        raise PydanticCustomError(
            "reward_weight", "a reward's value is its weight (a number) or an entry {example} with the "
            "reward's arguments", {"example": _ENTRY_EXAMPLE}) from None


RewardValue = Annotated[float | RewardEntry, WrapValidator(_weight_or_entry)]
"""One `rewards` value: its weight, or a RewardEntry."""


def _arguments(rewards: Mapping[str, Any], *names: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, arguments) of the `rewards` entries that are TRL's reward `names` (by either name)."""
    return [(n, dict(e.kwargs)) for n, e in rewards.items() if n in names and isinstance(e, RewardEntry)]


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def trl_reward_problems(rewards: Mapping[str, Any], max_completion_length: int) -> list[str]:
    """TRL's parameterised rewards whose arguments make them score 0 on every completion, or fail, given that
    completions stop at `max_completion_length` tokens (`train.max_completion_length`). Mistyped or missing
    arguments are left to the reward's argument check (settings.environment)."""
    out, limit = [], max_completion_length
    for name, kw in _arguments(rewards, "soft_overlong", "get_soft_overlong_punishment"):
        # DAPO eq. 13: 0 up to max_completion_len - soft_punish_cache tokens, then down to -1 at max_completion_len
        top, cache = kw.get("max_completion_len"), kw.get("soft_punish_cache")
        if not (_whole(top) and _whole(cache)):
            continue
        if not 0 <= cache <= top:
            out.append(f"rewards.{name}.soft_punish_cache={cache} must be between 0 and its max_completion_len "
                       f"({top}): the punishment ramps from 0 to -1 over the last soft_punish_cache tokens; set it "
                       f"to a share of max_completion_len, e.g. {max(top // 8, 1)}")
        elif top - cache >= limit:
            fix = (f"set rewards.{name}.max_completion_len to {limit} (DAPO's L_max is the generation limit)"
                   if top > limit else f"give rewards.{name}.soft_punish_cache a ramp, e.g. {max(limit // 8, 1)}")
            out.append(f"rewards.{name} punishes completions longer than max_completion_len - soft_punish_cache = "
                       f"{top - cache} tokens, but no completion is longer than train.max_completion_length ({limit}), "
                       f"so this reward would be 0 for every completion; {fix}")
    for name, kw in _arguments(rewards, "repetition_penalty", "get_repetition_penalty_reward"):
        # repeated n-grams of words: one needs at least ngram_size + 1 words, and a word is at least one token
        if _whole(size := kw.get("ngram_size")) and size >= limit:
            out.append(f"rewards.{name}.ngram_size={size} leaves no room for a repeated n-gram in a completion of at "
                       f"most train.max_completion_length={limit} tokens, so this reward would be 0 for every "
                       "completion; open-r1's recipes use 3")
    for name, kw in _arguments(rewards, "cosine_scaled", "get_cosine_scaled_reward"):
        if _whole(max_len := kw.get("max_len")) and max_len < 1:
            out.append(f"rewards.{name}.max_len={max_len} must be at least 1: the reward scales by completion length / "
                       f"max_len; set it to train.max_completion_length ({limit})")
    return out


def trl_reward_warnings(rewards: Mapping[str, Any], max_completion_length: int, system_prompt: str | None,
                        prompt_template: str | None) -> list[str]:
    """TRL's rewards set up for another length than the generation limit, or for a format the prompts do not ask
    for: legal, usually wrong."""
    out, limit = [], max_completion_length
    for name, kw in _arguments(rewards, "soft_overlong", "get_soft_overlong_punishment"):
        if _whole(top := kw.get("max_completion_len")) and top != limit:
            out.append(f"rewards.{name}.max_completion_len={top} differs from train.max_completion_length={limit}: "
                       "DAPO's overlong penalty is meant for the generation limit (above it, it never applies; below "
                       "it, it penalises completions the limit allows); set both alike")
    for name, kw in _arguments(rewards, "cosine_scaled", "get_cosine_scaled_reward"):
        if _whole(max_len := kw.get("max_len")) and max_len >= 1 and max_len != limit:
            out.append(f"rewards.{name}.max_len={max_len} differs from train.max_completion_length={limit}: the cosine "
                       f"schedule scales by length / max_len, so completions use only {min(limit / max_len, 1):.0%} "
                       "of its range; set both alike")
    if "think_format_reward" in rewards and "<think>" not in f"{system_prompt or ''} {prompt_template or ''}":
        out.append("rewards.think_format_reward scores the <think>...</think> format (TRL's), but data.system_prompt "
                   "does not ask for it (the job's default asks for <reasoning>/<answer>), so it would score 0 unless "
                   "the model thinks in <think> on its own (e.g. Qwen3); ask for <think> in GRPO_DATA__SYSTEM_PROMPT, "
                   "or use the job's `format` reward")
    return out
