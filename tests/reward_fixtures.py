"""A user reward loaded by `module:function` in tests; its variance guarantees a learning signal."""


def length_reward(completions, **kwargs):
    """Longer completions score higher (0..1): sampled groups always differ, so advantages are nonzero."""
    from grpo_job.rewards import completion_text

    return [min(len(completion_text(c)), 200) / 200 for c in completions]
