"""The values of the `rewards` setting: the built-in reward names, and a reward's weight or its entry
(weight and keyword arguments). The `rewards` field itself is the root model's (`settings.root`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError

# Reward names grpo_job.rewards knows, kept here so validating settings imports no reward code
# (tests/test_settings.py checks the two agree).
BUILTIN_REWARDS = (
    "format", "partial_format", "correctness", "integer_answer", "code", "json_schema",  # grpo_job.rewards.REGISTRY
    "accuracy_reward", "reasoning_accuracy_reward", "think_format_reward",  # TRL's, by their TRL names
    "get_cosine_scaled_reward", "get_repetition_penalty_reward", "get_soft_overlong_punishment",
    "soft_overlong", "repetition_penalty", "cosine_scaled",  # short names of TRL's parameterised ones
)


class RewardEntry(BaseModel):
    """One `rewards` entry with arguments (open-r1's parameterised rewards), e.g.
    `soft_overlong: {weight: 1.0, max_completion_len: 384, soft_punish_cache: 48}`: `weight` is
    TRL's `reward_weights` entry, every other key a keyword argument of the reward (of its `get_*`
    factory for TRL's parameterised rewards), checked against its signature."""

    model_config = ConfigDict(extra="allow")

    weight: float = 1.0

    @property
    def kwargs(self) -> dict[str, Any]:
        """The reward's keyword arguments: every key but `weight`."""
        return dict(self.model_extra or {})


_WEIGHT = TypeAdapter(float)
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
