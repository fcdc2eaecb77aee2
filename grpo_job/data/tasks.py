"""Tasks: how a dataset's reference solution becomes the answer the rewards compare against (`gsm8k`: after
`####`; `math`: the last `\\boxed{}`; `plain`: as written), which columns hold the prompt and the reference,
and the keyword names TRL gives every reward (a dataset column must not take them)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from grpo_job.settings import DataSettings

Row = dict[str, Any]


# Keyword arguments TRL's GRPOTrainer gives every reward besides the dataset columns (and the columns it
# leaves out): a dataset column of the same name would collide with them.
TRL_REWARD_ARGS = ("prompts", "completions", "completion", "completion_ids", "trainer_state", "log_extra",
                   "log_metric", "environments")


ANSWER = "answer"  # the name the reference answer is stored and passed to the rewards under


_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def gsm8k_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: the text after `####`, thousands separators dropped (`1,000`
    -> `1000`); other commas kept, so a pair `(1, 2)` or a list `3,4` is not read as 12 or 34."""
    return _THOUSANDS_COMMA.sub("", solution.split("####")[-1].strip())


def boxed_answer(solution: str) -> str:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`) of a solution, nested braces kept; "" when
    there is none or it is not closed (the reference-answer check counts those)."""
    starts = [i for i in (solution.rfind("\\boxed{"), solution.rfind("\\fbox{")) if i >= 0]
    if not starts:
        return ""
    i = solution.index("{", max(starts)) + 1
    depth, j = 1, i
    while j < len(solution):
        depth += {"{": 1, "}": -1}.get(solution[j], 0)
        if depth == 0:
            return solution[i:j].strip()
        j += 1
    return ""


@dataclass(frozen=True)
class Task:
    prompt_column: str
    answer_column: str
    answer: Callable[[str], str]  # reference solution -> reference answer
    about: str


TASKS: dict[str, Task] = {
    "gsm8k": Task("question", "answer", gsm8k_answer, "the final answer after ####"),
    "math": Task("problem", "solution", boxed_answer, "the answer in the last \\boxed{}"),
    "plain": Task("prompt", "answer", lambda s: s.strip(), "the answer column as written"),
}


# TRL's own dataset format: the prompt in `prompt`, the reference under one of the names TRL's rewards and
# recipes read it from (`accuracy_reward`'s `solution`; `answer`).
TRL_PROMPT_COLUMN = "prompt"


TRL_REFERENCE_COLUMNS = ("solution", "answer")


def field_of(row: Row, column: str) -> Any:
    """`row[column]`; for a column the row lacks named `a.b` (datasets' `flatten()` name of a nested field), the
    field `b` of the object in column `a` (trial: JSONL with `{"input": {"text": ...}}` needed rewriting). None
    when absent."""
    if column in row or "." not in column:
        return row.get(column)
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def has_column(found: Iterable[str], column: str) -> bool:
    """`column` is one of `found`, or a nested field's name (`a.b`) under one of them (`field_of` reads it)."""
    found = set(found)
    return column in found or ("." in column and column.split(".")[0] in found)


def columns_of(settings: DataSettings, found: Iterable[str] | None = None) -> tuple[str, str]:
    """(prompt column, answer column): the settings' or else the task's. Given the data's columns
    (`found`), a column the settings leave to the task and the data lacks falls back to TRL's standard
    name where the data has it: the prompt to `prompt`, the reference to `solution` or `answer` (a dataset
    in TRL's own format works as it does in TRL, without mapping)."""
    task = TASKS[settings.task]
    prompt_col = settings.prompt_column or task.prompt_column
    answer_col = settings.answer_column or task.answer_column
    if found is not None:
        found = list(found)
        if not settings.prompt_column and prompt_col not in found and TRL_PROMPT_COLUMN in found:
            prompt_col = TRL_PROMPT_COLUMN
        # the reference by TRL's names only for rows whose prompt was found: in data of another shape (a
        # `problem`/`solution` file under task gsm8k) a `solution` is not this task's answer, and the error names both
        if not settings.answer_column and answer_col not in found and prompt_col in found:
            answer_col = next((c for c in TRL_REFERENCE_COLUMNS if c in found), answer_col)
    return prompt_col, answer_col
