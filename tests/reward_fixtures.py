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
