"""Checks on the data before any model is loaded: the columns a task and the rewards need, one type per
column, reference answers the answer checker can parse, prompts against the model's chat template and
`max_prompt_length`, and what the held-out split means for the evaluation settings. Each problem is a
SettingsError (exit 2) saying what to set."""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from grpo_job.data.tasks import ANSWER, TASKS, TRL_REWARD_ARGS, Row, columns_of, has_column
from grpo_job.errors import SettingsError
from grpo_job.settings import DataSettings, EvaluationSettings
from grpo_job.settings.data import eval_fraction_applies

log = logging.getLogger(__name__)


def trl_columns_note(settings: DataSettings, found: Iterable[str]) -> str | None:
    """What `columns_of` took from TRL's standard names instead of the task's, as one sentence; None when
    nothing (the plan `check` prints and the prepare-data log say it)."""
    task = TASKS[settings.task]
    used = columns_of(settings, found)
    taken = [f"{what} from {col!r} (TRL's standard column; task {settings.task!r} reads {own!r}, which the data lacks)"
             for what, col, own in (("prompt", used[0], task.prompt_column), ("reference answer", used[1],
                                                                              task.answer_column))
             if col != own and col != (settings.prompt_column if what == "prompt" else settings.answer_column)]
    return "; ".join(taken) or None


def close_columns(missing: list[str], found: list[str]) -> str:
    """`; did you mean 'expected' for 'Expected'?` for each missing column with a close one in the data
    (by case first: a column typed as its header shows, or as the docs spell it)."""
    lower = {c.lower(): c for c in found}
    hints = []
    for m in missing:
        close = difflib.get_close_matches(m.lower(), list(lower), n=1, cutoff=0.75)
        if close:
            hints.append(f"{lower[close[0]]!r} for {m!r}")
    return f"; did you mean {', '.join(hints)}?" if hints else ""


def _suggestion(found: list[str]) -> str:
    for task, t in TASKS.items():
        if t.prompt_column in found and t.answer_column in found:
            return f"; these columns fit GRPO_DATA__TASK={task} (its reference answer: {t.about} of {t.answer_column!r})"
    return ""


def check_columns(columns: Iterable[str], settings: DataSettings, where: str) -> None:
    """The prompt and answer columns exist and no column collides with the names TRL gives the rewards.
    Raises SettingsError naming what was found and the settings to change."""
    found = list(columns)
    prompt_col, answer_col = columns_of(settings, found)
    missing = [c for c in (prompt_col, answer_col) if not has_column(found, c)]
    if missing:
        raise SettingsError(
            f"dataset {where} lacks column(s) {missing}; it has {found}. Task {settings.task!r} reads the prompt from "
            f"{prompt_col!r} and the reference answer from {answer_col!r}: set GRPO_DATA__PROMPT_COLUMN and "
            f"GRPO_DATA__ANSWER_COLUMN to the columns that hold them (and GRPO_DATA__TASK: gsm8k, math or plain, for "
            f"how the answer is read){close_columns(missing, found)}{_suggestion(found)}"
        )
    clash = [c for c in found if c in TRL_REWARD_ARGS]
    if clash:
        raise SettingsError(
            f"dataset {where} has column(s) {clash}, which TRL's GRPOTrainer uses as its own reward arguments "
            f"({', '.join(TRL_REWARD_ARGS)}); rename them in the data"
        )
    taken = [(c, std) for c, std in (("prompt", prompt_col), (ANSWER, answer_col)) if c in found and c != std]
    if taken:
        c, std = taken[0]
        raise SettingsError(
            f"dataset {where} has a column {c!r} besides the {'prompt' if c == 'prompt' else 'answer'} column "
            f"{std!r}: the prepared rows keep the {'prompt' if c == 'prompt' else 'reference answer'} under {c!r}, "
            f"so the data's own {c!r} would be lost; rename it in the data, or set "
            f"GRPO_DATA__{'PROMPT' if c == 'prompt' else 'ANSWER'}_COLUMN={c} if it is the one to use"
        )


def check_column_types(rows: list[Row], where: str) -> None:
    """Each column holds one type across the rows (the trainer builds an Arrow table from them): a column
    with numbers in one row and text in another fails here, naming the column, not in the train stage."""
    import pyarrow as pa

    for col in dict.fromkeys(k for r in rows for k in r):
        try:
            pa.array([r.get(col) for r in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            kinds = Counter(type(r[col]).__name__ for r in rows if r.get(col) is not None)
            rare = min(kinds, key=lambda k: kinds[k])
            odd = [r for r in rows if r.get(col) is not None and type(r[col]).__name__ == rare]
            raise SettingsError(f"column {col!r} of {where} mixes value types across rows "
                                f"({', '.join(f'{n} {k}' for k, n in kinds.most_common())}; {len(odd)} row(s) of "
                                f"{rare}, e.g. {excerpt(odd[0], ('prompt',))}); "
                                "give it one type in every row (e.g. numbers in every row, or text in every row; lists and "
                                "objects of mixed shapes are kept as JSON text by the job itself)"
                                ) from None


def excerpt(row: Row, leave_out: tuple[str, ...] = ()) -> str:
    """A row as errors show it, by its content (rows are shuffled and held out before they are checked, so a
    position is no line of the file): JSON, cut at 300 characters, `leave_out` columns dropped."""
    return json.dumps({k: v for k, v in row.items() if k not in leave_out}, ensure_ascii=False, default=str)[:300]


_DECIMAL_COMMA = re.compile(r"-?\d+,\d{1,2}$")  # 57,00 or 3,5; not 1,234 (thousands) nor 3, 5 (a list)


def check_references(rows: list[Row], settings: DataSettings, where: str = "the data") -> dict[str, Any]:
    """Parse every reference answer with the correctness reward's checker (`answers.parse_reference`, as
    the row's `answer_type` column gives it, else `data.answer_type`). Returns {"unparsable_answers": n};
    some: warned with an example. Raises SettingsError with an example row when most cannot be parsed (the
    reward could never score them), or naming the row whose `answer_type` is none of auto, math, exact."""
    from grpo_job import answers

    for r in rows:
        try:
            answers.check_answer_type(r.get("answer_type", settings.answer_type))
        except answers.UnknownAnswerType as e:
            raise SettingsError(f"a row of {where}, column 'answer_type': {e}; an unknown type is not compared as "
                                f"math: fix that row's answer_type: {excerpt(r, ('prompt',))}") from None
    comma = [r for r in rows if _DECIMAL_COMMA.match(str(r[ANSWER]).strip())]
    if comma:  # a `;` spreadsheet's `57,00`: read as the list {57, 0}, so 57 and 57.00 score 0 (trial)
        log.warning("data: %d of %d reference answers of %s look like decimals written with a comma (e.g. %r), which "
                    "the answer checker reads as a list of numbers (57,00 is 57 and 0): write them with a point "
                    "(57.00), or, if they are lists, with a space after the comma (3, 5)", len(comma), len(rows), where,
                    str(comma[0][ANSWER]))
    bad = [r for r in rows if answers.parse_reference(str(r[ANSWER]), r.get("answer_type", settings.answer_type)) is None]
    if not bad:
        return {"unparsable_answers": 0}
    _, answer_col = columns_of(settings, rows[0].keys())
    what = (f"{len(bad)} of {len(rows)} reference answers cannot be parsed as answer_type={settings.answer_type!r} "
            f"(task {settings.task!r} reads them from column {answer_col!r}: {TASKS[settings.task].about}); "
            f"e.g. row {excerpt(bad[0], ('prompt',))}")
    if len(bad) * 2 > len(rows):
        raise SettingsError(f"{what}. The correctness reward could never score these rows: set GRPO_DATA__TASK, "
                            "GRPO_DATA__ANSWER_COLUMN or GRPO_DATA__ANSWER_TYPE to match the data")
    log.warning("data: %s; those rows can never earn the correctness reward", what)
    return {"unparsable_answers": len(bad)}


def check_answer_not_in_prompt(rows: list[Row], settings: DataSettings, where: str = "the data") -> None:
    """Raise SettingsError when a conversational prompt ends with an assistant turn that holds the row's reference
    answer (a chat dataset's `messages` taken whole as the prompt): the model would be shown the answer it is
    scored on. An assistant turn that does not hold it stays (a conversation the model answers after; TRL 1.15
    renders it closed, then the generation prompt)."""
    from grpo_job import answers

    def leaks(row: Row) -> bool:
        last, reference = row["prompt"][-1], str(row[ANSWER]).strip()
        # as written or by the answer checker (`12 m^2` for 12); a prefilled start holding the answer by chance
        # (`Step 1:` for 1) is refused too, a rare price for never training on a shown answer
        return last["role"] == "assistant" and bool(reference) and (reference in last["content"] or answers.verify(
            last["content"], reference, row.get("answer_type", settings.answer_type)))

    leaked = [r for r in rows if leaks(r)]
    if leaked:
        prompt_col, _ = columns_of(settings, rows[0].keys())
        raise SettingsError(
            f"{len(leaked)} of {len(rows)} prompts of {where} end with an assistant turn that holds the row's reference "
            f"answer (e.g. {leaked[0]['prompt'][-1]['content'][:120]!r} for answer {str(leaked[0][ANSWER])[:60]!r}), "
            f"so the model would be shown the answer it is scored on. A GRPO prompt ends with the user's turn (TRL's "
            f"prompt-only format): drop the final assistant turns from column {prompt_col!r} (a chat dataset's "
            "'messages' holds the whole conversation), keeping the answer in the answer column (GRPO_DATA__ANSWER_COLUMN)")


def check_prompts(rows: list[Row], render: Any, settings: DataSettings, max_prompt_length: int) -> dict[str, Any]:
    """Render every prompt with the job's prompt renderer (`grpo_job.chat.PromptRenderer`: the chat template
    with the trainer's `chat_template_kwargs`, or plain text) and count its tokens as TRL will.

    Returns {"chat_template": str, "prompt_format": "chat" | "plain", "prompt_tokens_max": int | None,
    "too_long": int | None}. Raises SettingsError when the template rejects a prompt (naming
    GRPO_DATA__SYSTEM_PROMPT when it is the system message it rejects), or when every prompt is longer than
    `max_prompt_length` tokens (naming GRPO_TRAIN__MAX_PROMPT_LENGTH). Some too long: counted and warned.
    """
    status = "ok" if render.format == "chat" else \
        f"not used: plain-text prompts (data.prompt_format={settings.prompt_format})"
    lengths = []
    for i, row in enumerate(rows):
        try:
            render.text(row["prompt"])
        except SettingsError:
            raise
        except Exception as e:  # the template's own error (jinja raise_exception, TemplateError…) is the finding
            raise SettingsError(_template_problem(render, row["prompt"], i, e, settings)) from None
        lengths.append(render.count(row["prompt"]))
    if not lengths or lengths[0] is None:
        return {"chat_template": status, "prompt_format": render.format, "prompt_tokens_max": None, "too_long": None}
    too_long = sum(n > max_prompt_length for n in lengths)
    if too_long == len(lengths):
        raise SettingsError(
            f"every one of the {len(lengths)} training prompts is longer than train.max_prompt_length="
            f"{max_prompt_length} tokens (the shortest has {min(lengths)}, the longest {max(lengths)}), so nothing "
            f"would be trained; set GRPO_TRAIN__MAX_PROMPT_LENGTH to at least {min(lengths)} (all fit at "
            f"{max(lengths)}; keep it + max_completion_length <= model.max_seq_length)"
        )
    if too_long:
        log.warning("data: %d of %d prompts are longer than train.max_prompt_length=%d tokens and will be dropped "
                    "in training (the longest has %d; GRPO_TRAIN__MAX_PROMPT_LENGTH)", too_long, len(lengths),
                    max_prompt_length, max(lengths))
    return {"chat_template": status, "prompt_format": render.format, "prompt_tokens_max": max(lengths),
            "too_long": too_long}


def _template_problem(render: Any, messages: list[dict], index: int, error: Exception, settings: DataSettings) -> str:
    what = f"the chat template of {render.chat.source} raised {type(error).__name__}: {error}, on prompt {index}"
    if messages and messages[0]["role"] == "system":
        try:
            render.text(messages[1:])
        except Exception:  # it fails without the system message too: not the system message's fault
            return f"{what}. Check that the model (GRPO_MODEL__NAME_OR_PATH) is a chat model for these messages"
        if settings.system_prompt is not None and messages[0]["content"] == settings.system_prompt:
            return (f"{what}: it rejects the system message (Gemma-style templates have no system role). Set "
                    "GRPO_DATA__SYSTEM_PROMPT= (empty; null in YAML) to send none, and put the instructions in "
                    "GRPO_DATA__PROMPT_TEMPLATE instead")
        return f"{what}: it rejects the system message that the dataset's own prompt starts with; remove it from the data"
    return f"{what}. Check that the model (GRPO_MODEL__NAME_OR_PATH) is a chat model for these messages"


# Held-out rows under which the before/after accuracy is noise: one row moves it by over 10 points (trial: a
# 28-row file held out 1 row and the report compared accuracies on it without a word).
MIN_EVALUATION_ROWS = 10


def hold_out_note(data: DataSettings, evaluation: EvaluationSettings, n_train: int, n_eval: int) -> str | None:
    """A warning about the rows `data.eval_fraction` holds out of the training data (`n_train`, `n_eval`:
    the counts before `max_samples`/`eval_samples`), worded for what evaluates them; None when all is as
    asked. Held-out rows nothing evaluates (`evaluation.data_path` set, or evaluation disabled) are lost to
    training; with them evaluated: no row held out (a 1-row file), a share far from `eval_fraction`
    (1 of 2 rows is 50%), or fewer than MIN_EVALUATION_ROWS scored. Names the settings that change it."""
    total = n_train + n_eval
    if not eval_fraction_applies(data) or data.eval_fraction <= 0 or total == 0:
        return None
    held = f"{n_eval} of {total} rows held out ({n_eval / total:.0%}) for data.eval_fraction={data.eval_fraction:g}"
    if not evaluation.enabled or evaluation.data_path:
        if not n_eval:
            return None
        why = ("evaluation.enabled=false" if not evaluation.enabled
               else f"the evaluation scores evaluation.data_path={evaluation.data_path} instead")
        return (f"{held} are removed from training and never used ({why}); set data.eval_fraction=0 "
                "(GRPO_DATA__EVAL_FRACTION) to train on every row")
    if not n_eval:
        return (f"no row held out: {total} row cannot be split, so it trains and the evaluate stages have nothing "
                "to score; set evaluation.data_path to a file of rows to evaluate on, give more rows, or set "
                "evaluation.enabled=false")
    if n_eval / total > 2 * data.eval_fraction:
        return (f"{held}; set data.eval_fraction=0 to train on every row (and evaluation.data_path to evaluate on "
                "another file), or give more rows")
    capped = evaluation.max_samples is not None and evaluation.max_samples < min(n_eval, data.eval_samples or n_eval)
    scored = min(n_eval, data.eval_samples or n_eval, evaluation.max_samples or n_eval)
    if scored >= MIN_EVALUATION_ROWS:
        return None
    more = ("raise evaluation.max_samples (GRPO_EVALUATION__MAX_SAMPLES)" if capped else
            "give more rows, raise data.eval_fraction (GRPO_DATA__EVAL_FRACTION), or set evaluation.data_path to a file "
            "of rows")
    return (f"the evaluate stages score {scored} held-out row{'s' if scored > 1 else ''} ({held}"
            f"{f', evaluation.max_samples={evaluation.max_samples}' if capped else ''}): one row moves a share (the "
            f"accuracy, a 0/1 reward's mean) by {100 / scored:.0f} points, too few to tell the trained model from the "
            f"base; {more}")
