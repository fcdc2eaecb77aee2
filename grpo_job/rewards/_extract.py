"""Where a reward finds the part of a completion it scores: the answer block, a fenced block, the text."""

from __future__ import annotations

import re

from grpo_job.rewards.builtin import extract_answer

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[ \t]*\n(.*?)```", re.DOTALL)


def last_fenced(text: str) -> str | None:
    """The content of the last ```-fenced block (any language tag), or None."""
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
