"""Where a reward finds the part of a completion it scores: the answer block, a fenced block, the text."""

from __future__ import annotations

import re

from grpo_job.rewards.builtin import extract_answer

# the closing fence may be missing at the very end: a completion cut off at max_completion_length
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def last_fenced(text: str, languages: tuple[str, ...] = ()) -> str | None:
    """The content of the last ```-fenced block tagged with one of `languages` (lower case), else of the last
    fenced block whatever its tag (an unclosed block at the end of the text counts), or None.

    The tag wins over the position as in open-r1's `extract_code` (the last ```python block): a model that
    writes its program and then an untagged block of sample output is scored on the program."""
    found = _FENCE.findall(text)
    tagged = [body for tag, body in found if tag.lower() in languages]
    if tagged:
        return tagged[-1]
    return found[-1][1] if found else None


def tagged_blocks(text: str, languages: tuple[str, ...]) -> list[str]:
    """The contents of every ```-fenced block tagged with one of `languages` (lower case), in order."""
    return [body for tag, body in _FENCE.findall(text) if tag.lower() in languages]


def unfence(text: str, languages: tuple[str, ...] = ()) -> str:
    """`text` without a fence around it (an answer block that holds a fenced block), by `last_fenced`'s rule."""
    inner = last_fenced(text, languages)
    return inner if inner is not None else text


def answer_or_fenced(text: str, languages: tuple[str, ...] = ()) -> str | None:
    """The answer block (unfenced) when the completion has one, else the fenced block `last_fenced` picks
    for `languages`, else None."""
    answer = extract_answer(text)
    if answer is not None:
        return unfence(answer, languages).strip("\n")
    return last_fenced(text, languages)
