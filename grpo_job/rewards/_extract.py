"""Where a reward finds the part of a completion it scores: the answer block, a fenced block, the text."""

from __future__ import annotations

import re

from grpo_job.rewards.builtin import extract_answer

# the closing fence may be missing at the very end: a completion cut off at max_completion_length
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def last_fenced(text: str) -> str | None:
    """The content of the last ```-fenced block (any language tag; unclosed at the end of the text counts),
    or None."""
    found = _FENCE.findall(text)
    return found[-1][1] if found else None


def unfence(text: str) -> str:
    """`text` without a fence around it (an answer block that holds a fenced block)."""
    inner = last_fenced(text)
    return inner if inner is not None else text


def answer_or_fenced(text: str) -> str | None:
    """The answer block (unfenced) when the completion has one, else the last fenced block, else None."""
    answer = extract_answer(text)
    if answer is not None:
        return unfence(answer).strip("\n")
    return last_fenced(text)
