"""A user reward loaded by `module:function` in tests; its variance guarantees a learning signal."""


def length_reward(completions, **kwargs):
    """Longer completions score higher (0..1): sampled groups always differ, so advantages are nonzero."""
    from grpo_job.rewards import completion_text

    return [min(len(completion_text(c)), 200) / 200 for c in completions]


def by_difficulty(completions, difficulty, **kwargs):
    """A reward that reads a dataset column: harder problems pay more for a longer completion. When
    TEST_REWARD_LOG is set, each call's `difficulty` list is appended there (to prove what TRL passed)."""
    import json
    import os

    from grpo_job.rewards import completion_text

    if log := os.environ.get("TEST_REWARD_LOG"):
        with open(log, "a") as f:
            f.write(json.dumps(difficulty) + "\n")
    return [d * min(len(completion_text(c)), 100) / 500 for c, d in zip(completions, difficulty, strict=True)]


async def async_tag_reward(completions, **kwargs):
    """An async reward (an LLM judge would be one): 1 when an <answer> tag is present."""
    from grpo_job.rewards import completion_text

    return [1.0 if "<answer>" in completion_text(c) else 0.0 for c in completions]


def odd_rows_skipped(completions, answer, **kwargs):
    """Returns None (TRL: skipped) for rows whose reference answer is odd, 1.0 otherwise."""
    return [None if int(a) % 2 else 1.0 for a in answer]


def weighted_length(completions, scale=1.0, cap=200, **kwargs):
    """A parameterised plain function: min(length, cap) / cap * scale."""
    from grpo_job.rewards import completion_text

    return [min(len(completion_text(c)), cap) / cap * scale for c in completions]


class DifficultyBonus:
    """A callable object reading an extra dataset column (`difficulty`); TRL logs it by class name."""

    def __call__(self, completions, difficulty, **kwargs):
        return [0.1 * d for d in difficulty]


difficulty_bonus = DifficultyBonus()


class Shortness:
    """A callable object without a `__name__`: TRL logs it under its class name."""

    def __call__(self, completions, **kwargs):
        from grpo_job.rewards import completion_text

        return [1.0 - min(len(completion_text(c)), 100) / 100 for c in completions]


shortness = Shortness()


def no_kwargs(completions, k: int = 1):
    """A user reward without `**kwargs`: TRL's call (prompts=, completion_ids=, trainer_state=, the
    dataset columns) raises TypeError; the data check must say so before any model is loaded."""
    return [float(k)] * len(completions)


def by_solution(completions, solution, **kwargs):
    """A user's reward reading TRL's `solution` column (1 when the completion is it)."""
    return [1.0 if c == s else 0.0 for c, s in zip(completions, solution, strict=True)]


class LabelMatch:
    """A reward class whose instance is built with the entry's arguments: 1 (+ bonus) when the completion is the
    label, compared with or without case."""

    def __init__(self, bonus: float = 0.0, case_sensitive: bool = True):
        self.bonus, self.case_sensitive = bonus, case_sensitive

    def __call__(self, completions, answer, **kwargs):
        from grpo_job.rewards import completion_text

        same = (lambda a, b: a == b) if self.case_sensitive else (lambda a, b: a.lower() == b.lower())
        return [1.0 + self.bonus if same(completion_text(c).strip(), str(a)) else 0.0
                for c, a in zip(completions, answer, strict=True)]
