"""Datasets: load rows from the Hub, a local file, S3 or a built-in generator, and turn each row into a
chat prompt plus a reference answer, keeping every other column for the rewards.

A row's prompt comes from `data.prompt_column`: text (TRL's standard format, sent as the user message,
inside `data.prompt_template` when set) or a list of `{"role", "content"}` messages (TRL's conversational
format, sent as they are). The system prompt and few-shot turns go in front. The reference answer is read
from `data.answer_column` by the task (`gsm8k`: after `####`; `math`: the last `\\boxed{}`; `plain`: as
written). The prepared rows are JSON lines `{<every source column>, "prompt": [messages], "answer": "72"}`,
written to the run's store by the prepare-data stage so that every later stage (and a restarted pod) reads
the same data whatever happens to the source; TRL passes every column but `prompt` to the rewards as
keyword arguments.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpo_job import generated_tasks
from grpo_job.errors import SettingsError
from grpo_job.settings import DataSettings, EvaluationSettings
from grpo_job.settings.data import eval_fraction_applies

log = logging.getLogger(__name__)

Row = dict[str, Any]

# Keyword arguments TRL's GRPOTrainer gives every reward besides the dataset columns (and the columns it
# leaves out): a dataset column of the same name would collide with them.
TRL_REWARD_ARGS = ("prompts", "completions", "completion", "completion_ids", "trainer_state", "log_extra",
                   "log_metric", "environments")
ANSWER = "answer"  # the name the reference answer is stored and passed to the rewards under


# ---------------------------------------------------------------- tasks: reference solution -> answer
def gsm8k_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: the text after `####`, commas stripped."""
    return solution.split("####")[-1].strip().replace(",", "")


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


def _suggestion(found: list[str]) -> str:
    for task, t in TASKS.items():
        if t.prompt_column in found and t.answer_column in found:
            return f"; these columns fit GRPO_DATA__TASK={task}"
    return ""


def check_columns(columns: Iterable[str], settings: DataSettings, where: str) -> None:
    """The prompt and answer columns exist and no column collides with the names TRL gives the rewards.
    Raises SettingsError naming what was found and the settings to change."""
    found = list(columns)
    prompt_col, answer_col = columns_of(settings, found)
    missing = [c for c in (prompt_col, answer_col) if c not in found]
    if missing:
        raise SettingsError(
            f"dataset {where} lacks column(s) {missing}; it has {found}. Task {settings.task!r} reads the prompt from "
            f"{prompt_col!r} and the reference answer from {answer_col!r}: set GRPO_DATA__PROMPT_COLUMN and "
            f"GRPO_DATA__ANSWER_COLUMN to the columns that hold them (and GRPO_DATA__TASK: gsm8k, math or plain, for "
            f"how the answer is read){_suggestion(found)}"
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


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value)


def build_prompt(value: Any, settings: DataSettings) -> list[dict[str, str]]:
    """Chat messages for one row's prompt value (text or messages): system prompt (unless the messages
    have one), few-shot turns, then the prompt. Raises ValueError for any other value."""
    if isinstance(value, str):
        text = settings.prompt_template.replace("{prompt}", value) if settings.prompt_template else value
        messages = [{"role": "user", "content": text}]
    elif _is_messages(value):
        messages = [{"role": m["role"], "content": m["content"]} for m in value]
    else:
        raise ValueError(f"the prompt is {type(value).__name__}, not text nor a list of {{role, content}} messages")
    head = messages[:1] if messages[0]["role"] == "system" else []
    rest = messages[len(head):]
    if not head and settings.system_prompt:
        head = [{"role": "system", "content": settings.system_prompt}]
    shots = [m for ex in settings.few_shot for m in ({"role": "user", "content": ex.prompt},
                                                     {"role": "assistant", "content": ex.completion})]
    return head + shots + rest


def _jsonable(value: Any) -> tuple[Any, bool]:
    try:
        json.dumps(value)
        return value, True
    except (TypeError, ValueError):
        return str(value), False


def map_rows(raw: list[Row], settings: DataSettings, where: str, first_index: int = 0) -> list[Row]:
    """Prepared rows: every source column (values JSON cannot hold become text, with a warning), the
    chat `prompt` and the reference `answer`. Raises SettingsError naming the row when a prompt or
    answer is missing or of the wrong kind."""
    if not raw:
        return []
    check_columns(raw[0].keys(), settings, where)
    prompt_col, answer_col = columns_of(settings, raw[0].keys())
    task = TASKS[settings.task]
    # a reference taken from TRL's `solution`/`answer` (not the task's column) is the answer itself where the
    # task's reading finds nothing in it (no `\boxed{}` for task math), as TRL's accuracy_reward reads it
    as_written = answer_col != (settings.answer_column or task.answer_column)
    out, stringified = [], set()
    for i, row in enumerate(raw, start=first_index):
        if row.get(prompt_col) is None or row.get(answer_col) is None:
            missing = [c for c in (prompt_col, answer_col) if row.get(c) is None]
            raise SettingsError(f"row {i} of {where} has no value in column(s) {missing}: fill or remove that row")
        clash = [c for c in row if c in TRL_REWARD_ARGS]
        if clash:
            check_columns(row.keys(), settings, f"{where} (row {i})")
        try:
            prompt = build_prompt(row[prompt_col], settings)
        except ValueError as e:
            raise SettingsError(f"row {i} of {where}, column {prompt_col!r}: {e}") from None
        kept = {}
        for k, v in row.items():
            kept[k], ok = _jsonable(v)
            if not ok:
                stringified.add(k)
        reference = task.answer(str(row[answer_col]))
        kept.update(prompt=prompt, answer=(reference or str(row[answer_col]).strip()) if as_written else reference)
        out.append(kept)
    if stringified:
        log.warning("data: column(s) %s hold values JSON cannot store; the rewards get them as text", sorted(stringified))
    return out


def check_column_types(rows: list[Row], where: str) -> None:
    """Each column holds one type across the rows (the trainer builds an Arrow table from them): a column
    with numbers in one row and text in another fails here, naming the column, not in the train stage."""
    import pyarrow as pa

    for col in dict.fromkeys(k for r in rows for k in r):
        try:
            pa.array([r.get(col) for r in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise SettingsError(f"column {col!r} of {where} mixes value types across rows ({e}); "
                                "give it one type in every row (a column of mixed shapes, such as the code reward's "
                                "tests, can hold each value as JSON text: the code and json_schema rewards decode it)"
                                ) from None


# ---------------------------------------------------------------- reference answers against the answer checker
def check_references(rows: list[Row], settings: DataSettings, where: str = "the data") -> dict[str, Any]:
    """Parse every reference answer with the correctness reward's checker (`answers.parse_reference`, as
    the row's `answer_type` column gives it, else `data.answer_type`). Returns {"unparsable_answers": n};
    some: warned with an example. Raises SettingsError with an example row when most cannot be parsed (the
    reward could never score them), or naming the row whose `answer_type` is none of auto, math, exact."""
    from grpo_job import answers

    for i, r in enumerate(rows):
        try:
            answers.check_answer_type(r.get("answer_type", settings.answer_type))
        except answers.UnknownAnswerType as e:
            raise SettingsError(f"row {i} of {where}, column 'answer_type': {e}; an unknown type is not compared as "
                                "math: fix that row's answer_type") from None
    bad = [r for r in rows if answers.parse_reference(str(r[ANSWER]), r.get("answer_type", settings.answer_type)) is None]
    if not bad:
        return {"unparsable_answers": 0}
    _, answer_col = columns_of(settings, rows[0].keys())
    example = {k: v for k, v in bad[0].items() if k != "prompt"}
    what = (f"{len(bad)} of {len(rows)} reference answers cannot be parsed as answer_type={settings.answer_type!r} "
            f"(task {settings.task!r} reads them from column {answer_col!r}: {TASKS[settings.task].about}); "
            f"e.g. row {json.dumps(example, ensure_ascii=False, default=str)[:500]}")
    if len(bad) * 2 > len(rows):
        raise SettingsError(f"{what}. The correctness reward could never score these rows: set GRPO_DATA__TASK, "
                            "GRPO_DATA__ANSWER_COLUMN or GRPO_DATA__ANSWER_TYPE to match the data")
    log.warning("data: %s; those rows can never earn the correctness reward", what)
    return {"unparsable_answers": len(bad)}


# ---------------------------------------------------------------- the prompts against the model's chat template
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


# ---------------------------------------------------------------- built-in generated data (offline)
_NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elif", "Femi", "Gita", "Hugo", "Iris", "Jun"]


def _arithmetic_problem(rng: random.Random) -> Row:
    name, kind = rng.choice(_NAMES), rng.randrange(4)
    a, b, c = rng.randint(2, 40), rng.randint(2, 12), rng.randint(1, 9)
    if kind == 0:
        q = f"{name} has {a} marbles, wins {b} more and then gives away {c}. How many marbles does {name} have now?"
        steps, ans = f"{a} + {b} = {a + b}. {a + b} - {c} = {a + b - c}.", a + b - c
    elif kind == 1:
        q = f"A box holds {b} pencils. How many pencils are in {c} boxes and {a} loose pencils?"
        steps, ans = f"{b} * {c} = {b * c}. {b * c} + {a} = {b * c + a}.", b * c + a
    elif kind == 2:
        q = f"{name} reads {b} pages a day for {c} days. The book has {b * c + a} pages. How many pages are left?"
        steps, ans = f"{b} * {c} = {b * c}. {b * c + a} - {b * c} = {a}.", a
    else:
        q = f"Tickets cost ${b} each. {name} buys {c} tickets and pays with ${b * c + a}. How much change is due?"
        steps, ans = f"{b} * {c} = {b * c}. {b * c + a} - {b * c} = {a}.", a
    return {"question": q, "answer": f"{steps}\n#### {ans}"}


def generate_arithmetic(n: int, seed: int) -> list[Row]:
    """Small GSM8K-shaped word problems (question, answer with `#### N`), reproducible from the seed."""
    rng = random.Random(seed)
    return [_arithmetic_problem(rng) for _ in range(n)]


# One worked example in the format the rewards check: SmolLM2-135M-Instruct never writes the tags
# from the system prompt alone (every reward 0), but copies them from an example in some samples.
_ADDITION_EXAMPLE = "Example:\nWhat is 3 + 4?\n<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>\n\n"


def generate_addition(n: int, seed: int) -> list[Row]:
    """`What is a + b?` (a, b in 2..20) after one worked example in the reward's format: a task on which
    a 135M model earns non-zero, varying reward within ~48 tokens (the CPU smoke run's learning signal)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        rows.append({"question": f"{_ADDITION_EXAMPLE}Now you: What is {a} + {b}?", "answer": f"{a} + {b} = {a + b}\n#### {a + b}"})
    return rows


BUILTIN_DATASETS: dict[str, Callable[[str], list[Row]]] = {
    # split -> rows; train and test use different seeds so they do not overlap by construction
    "arithmetic": lambda split: generate_arithmetic(256 if split == "train" else 64, 0 if split == "train" else 1),
    "addition": lambda split: generate_addition(256 if split == "train" else 64, 0 if split == "train" else 1),
}
BUILTIN_DATASETS.update(generated_tasks.DATASETS)  # builtin:coding, builtin:extraction


# ---------------------------------------------------------------- sources
# The setting a data file comes from, named in its errors: (dotted name, environment variable).
DATA_PATH = ("data.path", "GRPO_DATA__PATH")
EVALUATION_DATA_PATH = ("evaluation.data_path", "GRPO_EVALUATION__DATA_PATH")


def _file(path: Path, setting: tuple[str, str]) -> str:
    return f"data file {str(path)!r} ({setting[0]} [{setting[1]}])"


def _no_rows(path: Path, setting: tuple[str, str]) -> SettingsError:
    return SettingsError(f"{_file(path, setting)} has no rows; point {setting[1]} at a file with data")


# User files are read as `utf-8-sig`: UTF-8, with the byte-order mark that Windows tools (Excel, Notepad)
# put in front dropped (as plain `utf-8` it would be a JSON error, or a first column named `\ufeffquestion`).
TEXT_ENCODING = "utf-8-sig"


def _read_jsonl(path: Path, setting: tuple[str, str]) -> list[Row]:
    rows = []
    with path.open(encoding=TEXT_ENCODING) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise SettingsError(f"{_file(path, setting)}, line {number}: not valid JSON ({e}): {line[:200]!r}") from None
            if not isinstance(row, dict):
                raise SettingsError(f"{_file(path, setting)}, line {number}: a JSON object (one row) is needed, "
                                    f"found {type(row).__name__}")
            rows.append(row)
    return rows


def read_rows(path: Path, setting: tuple[str, str] = DATA_PATH) -> list[Row]:
    """Every row of a local .jsonl/.json/.csv/.parquet file. Raises SettingsError naming `setting` (the
    one the path came from: `DATA_PATH` or `EVALUATION_DATA_PATH`) for an unreadable file, a malformed
    JSONL line (with its line number) or a file without rows."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv", ".parquet"):
        raise SettingsError(f"{_file(path, setting)}: unsupported file type {suffix!r}: use .jsonl, .json, .csv "
                            "or .parquet")
    try:
        if suffix == ".jsonl":
            rows = _read_jsonl(path, setting)
        elif suffix == ".json":
            data = json.loads(path.read_text(encoding=TEXT_ENCODING))
            rows = data if isinstance(data, list) else data.get("data", [])
        elif suffix == ".csv":
            with path.open(newline="", encoding=TEXT_ENCODING) as f:
                rows = list(csv.DictReader(f))
        else:
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
    except (ValueError, OSError) as e:
        raise SettingsError(f"cannot read {_file(path, setting)}: {e}") from None
    if not rows:
        raise _no_rows(path, setting)
    return rows


def evaluation_rows(path: str, settings: DataSettings) -> list[Row]:
    """The rows of `evaluation.data_path` (a local file), read and mapped by `data.task` as the training
    rows are: what the evaluate stages score, and what the data check reads before any model is loaded.
    Raises SettingsError naming evaluation.data_path [GRPO_EVALUATION__DATA_PATH]."""
    file = Path(path.removeprefix("file://"))
    where = f"{str(file)!r} ({EVALUATION_DATA_PATH[0]} [{EVALUATION_DATA_PATH[1]}])"
    raw = read_rows(file, EVALUATION_DATA_PATH)
    try:
        rows = map_rows(raw, settings, where)
    except SettingsError as e:
        raise SettingsError(f"{e}. The evaluation file is mapped as the training data is (data.task, "
                            "data.prompt_column, data.answer_column): give it the training data's columns") from None
    # checked as the training rows are: one type per column, references the answer checker can read
    check_column_types(rows, where)
    try:
        check_references(rows, settings, where)
    except SettingsError as e:
        raise SettingsError(f"{e} (the file of evaluation.data_path [GRPO_EVALUATION__DATA_PATH])") from None
    return rows


def peek_columns(path: Path) -> list[str]:
    """Column names of a local data file, reading only its head (used by `check`)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with path.open(encoding=TEXT_ENCODING) as f:
                first = next((line for line in f if line.strip()), None)
            if first is None:
                raise _no_rows(path, DATA_PATH)
            return list(json.loads(first))
        if suffix == ".csv":
            with path.open(newline="", encoding=TEXT_ENCODING) as f:
                header = next(csv.reader(f), None)
            if not header:
                raise _no_rows(path, DATA_PATH)
            return header
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_schema(path).names
    except (ValueError, OSError) as e:
        raise SettingsError(f"cannot read {_file(path, DATA_PATH)}: {e}") from None
    rows = read_rows(path)
    return list(rows[0])


def local_data_file(settings: DataSettings, cache_dir: Path) -> Path | None:
    """The local file behind `data.path` (downloading an s3:// object into the cache); None for Hub
    datasets and built-in generators."""
    path = settings.path
    if path.startswith("builtin:"):
        return None
    if path.startswith("s3://"):
        from grpo_job.store.s3 import download_object

        target = cache_dir / "data" / Path(path).name
        download_object(path, target)
        return target
    local = Path(path.removeprefix("file://"))
    return local if local.is_file() else None


def load_raw(settings: DataSettings, cache_dir: Path) -> tuple[list[Row], list[Row], str]:
    """(train rows, held-out rows, description of the source)."""
    if settings.path.startswith("builtin:"):
        gen = BUILTIN_DATASETS[settings.path.split(":", 1)[1]]
        return gen("train"), gen("test"), settings.path
    file = local_data_file(settings, cache_dir)
    if file is not None:
        train, heldout = hold_out(read_rows(file), settings.eval_fraction, settings.seed)
        return train, heldout, settings.path
    return _load_hub(settings)


def hold_out(rows: list[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """(train rows, held-out rows): `fraction` of `rows` held out, picked by a seeded shuffle, each list
    in the file's order. Above 0 it holds out at least one row and never all of them; 0 holds out none."""
    if fraction <= 0 or len(rows) < 2:
        return list(rows), []
    n_eval = min(max(1, round(len(rows) * fraction)), len(rows) - 1)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def hold_out_note(data: DataSettings, evaluation: EvaluationSettings, n_train: int, n_eval: int) -> str | None:
    """A warning about the rows `data.eval_fraction` holds out of the training data (`n_train`, `n_eval`:
    the counts before `max_samples`/`eval_samples`), worded for what evaluates them; None when all is as
    asked. Held-out rows nothing evaluates (`evaluation.data_path` set, or evaluation disabled) are lost to
    training; with them evaluated: no row held out (a 1-row file), or a share far from `eval_fraction`
    (1 of 2 rows is 50%). Names the settings that change it."""
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
    if n_eval / total <= 2 * data.eval_fraction:
        return None
    return (f"{held}; set data.eval_fraction=0 to train on every row (and evaluation.data_path to evaluate on "
            "another file), or give more rows")


def _load_hub(settings: DataSettings) -> tuple[list[Row], list[Row], str]:
    import datasets

    def split(name: str) -> list[Row]:
        try:
            ds = datasets.load_dataset(settings.path, settings.name, split=name, revision=settings.revision)
        except (FileNotFoundError, ValueError) as e:
            raise SettingsError(f"cannot load split {name!r} of Hub dataset {settings.path!r}: {e}") from None
        return ds.to_list()

    train = split(settings.split)
    if settings.eval_split:
        heldout = split(settings.eval_split)
    else:
        train, heldout = hold_out(train, settings.eval_fraction, settings.seed)
    where = f"{settings.path}@{settings.revision or 'main'}"
    return train, heldout, where


def prepare(settings: DataSettings, cache_dir: Path) -> tuple[list[Row], list[Row], dict[str, Any]]:
    """Load, shuffle, cap and map: (train rows, eval rows, summary with the source, mapping and counts;
    `source_rows`: the train and held-out rows before `max_samples`/`eval_samples`).
    Raises SettingsError when the data cannot make prompts (missing or colliding columns, bad rows)."""
    train_raw, eval_raw, where = load_raw(settings, cache_dir)
    if not train_raw:
        raise SettingsError(f"dataset {where} has no training rows")
    source_rows = {"train": len(train_raw), "held_out": len(eval_raw)}
    rng = random.Random(settings.seed)
    rng.shuffle(train_raw)
    if settings.max_samples:
        train_raw = train_raw[: settings.max_samples]
    if settings.eval_samples:
        eval_raw = eval_raw[: settings.eval_samples]
    train = map_rows(train_raw, settings, where)
    heldout = map_rows(eval_raw, settings, f"{where} (held-out rows)")
    check_column_types(train + heldout, where)
    prompt_col, answer_col = columns_of(settings, train_raw[0].keys())
    if note := trl_columns_note(settings, train_raw[0].keys()):
        log.info("data: %s", note)
    summary = {"source": where, "task": settings.task, "prompt_column": prompt_col, "answer_column": answer_col,
               **({"columns_note": note} if note else {}),
               "columns": list(dict.fromkeys(k for r in train for k in r)), "train_rows": len(train),
               "eval_rows": len(heldout), "source_rows": source_rows}
    return train, heldout, summary


def to_jsonl(rows: list[Row]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def from_jsonl(text: str) -> list[Row]:
    # split on "\n" only: str.splitlines() also splits inside strings at U+2028 and friends (GSM8K has them)
    return [json.loads(line) for line in text.split("\n") if line.strip()]
