"""The job's answer-format rewards with TRL's signature (registered by name in `grpo_job.rewards`).

Each function takes `completions` (strings, or chat messages when prompts are conversational) plus
dataset columns as keyword arguments, and returns one float per completion. They are pure and never
raise on odd model output: a completion that cannot be parsed scores 0. Scores are in [0, 1]; the
weights in the settings (TRL's `reward_weights`) turn them into the recipe's 0.5 / 2.0.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from grpo_job import answers

RewardFunc = Callable[..., list[float | None]]

# The whole completion is one reasoning block followed by one answer block (each tag once: checked
# with _TAGS, since a regex alone lets `<answer>1</answer><answer>2</answer>` pass as one block).
_FORMAT = re.compile(r"^\s*<reasoning>.*?</reasoning>\s*<answer>.*?</answer>\s*$", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")


def completion_text(completion: Any) -> str:
    """The text of one completion, whether TRL passed a string or a list of chat messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    return ""


def extract_answer(text: str) -> str | None:
    """Content of the last `<answer>…</answer>` block, stripped; None when there is none."""
    found = _ANSWER.findall(text)
    return found[-1].strip() if found else None


def format_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """1 when the completion is exactly one `<reasoning>…</reasoning>` block then one
    `<answer>…</answer>` block (whitespace around them allowed), else 0."""
    out = []
    for c in completions:
        text = completion_text(c)
        once = all(text.count(tag) == 1 for tag in _TAGS)
        out.append(1.0 if once and _FORMAT.match(text) else 0.0)
    return out


def partial_format_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """0.25 for each of the four tags that appears exactly once: a gradient towards the format for
    small models that never write it whole (SmolLM2-135M scored 0 on `format` in 240 samples)."""
    out = []
    for c in completions:
        text = completion_text(c)
        out.append(float(sum(0.25 for tag in _TAGS if text.count(tag) == 1)))
    return out


def correctness_reward(
    completions: list[Any], answer: list[Any] | None = None,
    answer_type: answers.AnswerType | list[answers.AnswerType] = "auto", **kwargs: Any,
) -> list[float]:
    """1 when the `<answer>` block equals the reference `answer` by `grpo_job.answers.verify`, else 0.

    `answer_type` (`data.answer_type`, bound when the reward is built; a dataset column of that
    name gives one per row) picks math or exact-string comparison. Several `<answer>` blocks count
    only when every one is right: a hedge (`<answer>3</answer><answer>4</answer>`) earns nothing.
    """
    if answer is None:
        return [0.0] * len(completions)
    types = answer_type if isinstance(answer_type, list) else [answer_type] * len(completions)
    out = []
    for c, ref, kind in zip(completions, answer, types, strict=True):
        blocks = [b.strip() for b in _ANSWER.findall(completion_text(c))]
        right = bool(blocks) and all(answers.verify(b, str(ref), kind) for b in blocks)
        out.append(1.0 if right else 0.0)
    return out


def integer_answer_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """1 when the `<answer>` block holds just a number: nudges towards a parsable answer."""
    out = []
    for c in completions:
        ans = extract_answer(completion_text(c))
        out.append(1.0 if ans and re.fullmatch(r"-?\$?[\d,]+(?:\.\d+)?", ans) else 0.0)
    return out
