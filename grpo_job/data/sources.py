"""Sources: rows from a local table (grpo_job/data/files.py), S3, the Hub or a built-in generator, mapped to
prompts (`map_rows`) and split into train and held-out rows (`prepare`); the prepared rows as JSON lines."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from pathlib import Path
from typing import Any

from grpo_job.data.checks import (
    check_answer_not_in_prompt,
    check_column_types,
    check_columns,
    check_references,
    close_columns,
    excerpt,
    trl_columns_note,
)
from grpo_job.data.files import DATA_PATH, EVALUATION_DATA_PATH, read_rows, read_saved
from grpo_job.data.generated import BUILTIN_DATASETS
from grpo_job.data.tasks import TASKS, TRL_REWARD_ARGS, Row, columns_of, field_of, has_column
from grpo_job.errors import SettingsError
from grpo_job.settings import DataSettings
from grpo_job.settings.data import saved_dataset

log = logging.getLogger(__name__)


# ShareGPT's speaker names (`{"from": "human", "value": ...}`), as TRL's role names
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _as_messages(value: Any) -> list[dict[str, str]] | None:
    """`{"role", "content"}` messages from TRL's conversational form, from ShareGPT's `{"from", "value"}` turns, or
    from turns whose content is a list of text parts (`[{"type": "text", "text": ...}]`, joined); None for anything
    else (an image part among them: the job trains text models). Trial: the last two were refused."""
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
        return None
    out = []
    for m in value:
        role = m["role"] if "role" in m else _SHAREGPT_ROLES.get(str(m.get("from", "")).lower())
        content = m.get("content", m.get("value"))
        if isinstance(content, list) and content and all(
                isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
                for part in content):
            content = "".join(part["text"] for part in content)
        if not isinstance(role, str) or not isinstance(content, str):
            return None
        out.append({"role": role, "content": content})
    return out


def _messages_text(value: str) -> Any:
    """The messages a text holds as JSON (`[{"role": ..., "content": ...}]`: how a CSV cell, or a Hub dataset that
    stores lists as strings, carries a conversational prompt); None for any other text."""
    if not value.lstrip().startswith("["):
        return None
    try:
        read = json.loads(value)
    except ValueError:
        return None
    return read if _as_messages(read) is not None else None


# a slot of `data.prompt_template`: `{prompt}` or `{column}` (a dotted name reaches a nested field), unless LaTeX's:
# after a command (`\frac{a}`, `\text{x}`), a group (`}{b}`), `^` or `_` (`x^{n}`)
_SLOT = re.compile(r"(?<![}^_])\{([A-Za-z_][\w.]*)\}")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+\s*$")


def _slots(template: str) -> list[re.Match]:
    return [m for m in _SLOT.finditer(template) if not _LATEX_COMMAND.search(template, 0, m.start())]


def template_columns(settings: DataSettings, raw: list[Row], found: list[str], where: str) -> list[str]:
    """The columns of the data (`found`, of the rows `raw`) that `data.prompt_template` names as `{column}` slots,
    filled from each row. LaTeX's braces are no slots (`_slots`); a `{name}` that is no column, or a nested field
    no row has, stays as written, with a warning."""
    if not settings.prompt_template:
        return []
    names = list(dict.fromkeys(m[1] for m in _slots(settings.prompt_template) if m[1] != "prompt"))
    unknown = [n for n in names if not has_column(found, n)
               or (n not in found and all(field_of(row, n) is None for row in raw))]
    if unknown:
        log.warning("data: data.prompt_template has %s, which no column of %s holds, so %s sent as written; the "
                    "template fills {prompt} and {column} for the data's columns %s%s", ", ".join(f"{{{n}}}" for n in unknown),
                    where, "it is" if len(unknown) == 1 else "they are", found, close_columns(unknown, found))
    return [n for n in names if n not in unknown]


def _fill(template: str, values: dict[str, str]) -> str:
    """`template` with its slots (`_slots`) that `values` names filled, in one pass: a value that holds `{prompt}`
    or `{column}` itself is not filled again."""
    out, at = [], 0
    for m in _slots(template):
        if m[1] in values:
            out += [template[at:m.start()], values[m[1]]]
            at = m.end()
    return "".join(out) + template[at:]


def build_prompt(value: Any, settings: DataSettings, columns: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Chat messages for one row's prompt value (text, messages, or messages as JSON text): system prompt (unless
    the messages have one), few-shot turns, then the prompt. A text prompt goes into `data.prompt_template`, with
    `columns` (the row's values of the template's other slots, `template_columns`) in their `{column}` slots:
    text as it is, other values as JSON. Raises ValueError for any other prompt value."""
    if isinstance(value, str) and (held := _messages_text(value)) is not None:
        value = held  # sent as the messages it holds, not as a user message quoting their JSON
    if isinstance(value, str):
        slots = {**{k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
                    for k, v in (columns or {}).items()}, "prompt": value}
        text = _fill(settings.prompt_template, slots) if settings.prompt_template else value
        messages = [{"role": "user", "content": text}]
    elif (messages := _as_messages(value)) is None:
        raise ValueError(f"the prompt is {type(value).__name__}, not text nor a list of {{role, content}} messages "
                         "(ShareGPT's {from, value} turns and text content parts are read too)")
    head = messages[:1] if messages[0]["role"] == "system" else []
    rest = messages[len(head):]
    if not head and settings.system_prompt:
        head = [{"role": "system", "content": settings.system_prompt}]
    shots = [m for ex in settings.few_shot for m in ({"role": "user", "content": ex.prompt},
                                                     {"role": "assistant", "content": ex.completion})]
    return head + shots + rest


def _given_system(value: Any, prompt: list[dict[str, str]]) -> bool:
    """The row's prompt was conversational without a system message, and `build_prompt` gave it one (trial: a
    classification dataset's own "answer with one word" turns got the default format instruction unsaid)."""
    held = _messages_text(value) if isinstance(value, str) else value
    return held is not None and not isinstance(held, str) and prompt[0]["role"] == "system" and not any(
        m["role"] == "system" for m in (_as_messages(held) or []))


def _jsonable(value: Any) -> tuple[Any, bool]:
    try:
        json.dumps(value)
        return value, True
    except (TypeError, ValueError):
        return str(value), False


def _fields_held(row: Row, missing: list[str]) -> str:
    """For a missing nested field's name (`input.txt`): what the object it reaches into holds, as ` (...)`."""
    held = []
    for column in missing:
        parent = column.rsplit(".", 1)[0] if "." in column else None
        if parent is not None and isinstance(value := field_of(row, parent), dict):
            held.append(f"{parent!r} holds {sorted(value)}")
    return f" ({'; '.join(held)})" if held else ""


def map_rows(raw: list[Row], settings: DataSettings, where: str) -> list[Row]:
    """Prepared rows: every source column (values JSON cannot hold become text, with a warning), the
    chat `prompt` and the reference `answer`. Raises SettingsError naming the row when a prompt or
    answer is missing or of the wrong kind."""
    if not raw:
        return []
    # every row's columns, not the first row's: a first row without `answer` named the column missing from data
    # whose other rows have it (trial); a row without a value is then named on its own below
    found = list(dict.fromkeys(k for row in raw for k in row))
    check_columns(found, settings, where)
    prompt_col, answer_col = columns_of(settings, found)
    slots = template_columns(settings, raw, found, where)
    task = TASKS[settings.task]
    # a reference taken from TRL's `solution`/`answer` (not the task's column) is the answer itself where the
    # task's reading finds nothing in it (no `\boxed{}` for task math), as TRL's accuracy_reward reads it
    as_written = answer_col != (settings.answer_column or task.answer_column)
    out, stringified, structured, unmarked, given_system = [], set(), 0, 0, 0
    for row in raw:
        # rows are named by their content: after the seeded shuffle and the hold-out, a position is no line number
        if any(field_of(row, c) is None for c in (prompt_col, answer_col, *slots)):
            missing = [c for c in (prompt_col, answer_col, *slots) if field_of(row, c) is None]
            named = f" (data.prompt_template's {', '.join(f'{{{c}}}' for c in missing)})" if set(missing) <= set(slots) else ""
            raise SettingsError(f"a row of {where} has no value in column(s) {missing}{named}{_fields_held(row, missing)}: "
                                f"{excerpt(row)}; fill or remove that row")
        clash = [c for c in row if c in TRL_REWARD_ARGS]
        if clash:
            check_columns(row.keys(), settings, f"{where} (row {excerpt(row)})")
        try:
            prompt = build_prompt(field_of(row, prompt_col), settings, {c: field_of(row, c) for c in slots})
        except ValueError as e:
            raise SettingsError(f"a row of {where}, column {prompt_col!r}: {e}: {excerpt(row)}") from None
        given_system += _given_system(field_of(row, prompt_col), prompt)
        kept = {}
        for k, v in row.items():
            kept[k], ok = _jsonable(v)
            if not ok:
                stringified.add(k)
        value = field_of(row, answer_col)
        if isinstance(value, (list, dict)):
            # an object is the json_schema reward's reference; a list may be accepted answers, which no reward reads
            structured += isinstance(value, list)
            value = json.dumps(value, ensure_ascii=False, default=str)  # JSON text, not Python's ['yes']
        reference = task.answer(str(value))
        unmarked += not as_written and settings.task in _MARKERS and _MARKERS[settings.task] not in str(value)
        kept.update(prompt=prompt, answer=(reference or str(value).strip()) if as_written else reference)
        out.append(kept)
    if given_system and "system_prompt" not in settings.model_fields_set:
        log.warning("data: %d of %d conversational prompts in %s have no system message and get the default "
                    "data.system_prompt (the <reasoning>/<answer> format the built-in rewards read); set it to your "
                    "own instruction, or to '' to send them as they are [GRPO_DATA__SYSTEM_PROMPT]",
                    given_system, len(raw), where)
    if stringified:
        log.warning("data: column(s) %s hold values JSON cannot store; the rewards get them as text", sorted(stringified))
    if unmarked and settings.task == "gsm8k":
        log.warning("data: %d of %d answers in column %r of %s have no `####` (task gsm8k reads the answer after it), "
                    "so their whole text is the reference; a worked solution then never equals a model's answer: mark "
                    "the answer with `#### `, or set GRPO_DATA__TASK=plain when the column holds the answer alone",
                    unmarked, len(raw), answer_col, where)
    elif unmarked:  # math (trial: a code task's `problem`/`solution` columns, told they fit task math)
        log.warning("data: %d of %d answers in column %r of %s have no `\\boxed{}` (task math reads the answer in the "
                    "last one), so their reference answer is empty and no reward can compare with it: box the final "
                    "answer, or set GRPO_DATA__TASK=plain when the column holds the answer alone (a code task's "
                    "reference solution too)", unmarked, len(raw), answer_col, where)
    if structured:
        log.warning("data: %d of %d reference answers in column %r of %s are lists; the reference is their JSON text "
                    "(right for the json_schema reward). The correctness reward and the evaluation compare one answer: "
                    "for a list of accepted answers, keep one per row as text, or score with a reward of your own",
                    structured, len(raw), answer_col, where)
    check_answer_not_in_prompt(out, settings, where)
    return out



# what marks the answer in a reference solution, for the tasks that read one out of it (grpo_job.data.tasks)
_MARKERS = {"gsm8k": "####", "math": "\\boxed"}


def keep_shapes_as_text(rows: list[Row], where: str) -> list[str]:
    """Columns whose lists or objects Arrow would not keep as they are, made JSON text in place; returns them.

    The trainer builds an Arrow table of the rows (`Dataset.from_list`), which holds one type per column: objects
    of different keys get every key, missing ones null (a JSON schema with an optional property in one row gave
    every other row's schema `"nickname": null`, which jsonschema refuses: a crash at the first step, after the
    data check and the preflight had read the rows as written), and a column of lists in some rows and strings
    in others fails. Each list or object of such a column becomes its JSON text (strings and nulls stay), so the
    data check, the preflight and training all read the same values; the code and json_schema rewards decode
    JSON text. The prompt column is left alone (TRL reads it as messages)."""
    import pyarrow as pa

    changed = []
    for col in dict.fromkeys(k for r in rows for k in r):
        values = [r.get(col) for r in rows]
        if col == "prompt" or not any(isinstance(v, (list, dict)) for v in values):
            continue
        try:
            if pa.array(values).to_pylist() == values:
                continue
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass
        for r in rows:
            if isinstance(r.get(col), (list, dict)):
                r[col] = json.dumps(r[col], ensure_ascii=False, default=str)
        changed.append(col)
    if changed:
        # a warning for rewards of one's own, which get text where the file has lists; the job's read it as JSON
        log.warning("data: column(s) %s of %s mix lists or objects of different shapes across rows, which is fine: "
                    "each is kept as its JSON text, as the trainer's Arrow table holds one type per column. The code "
                    "and json_schema rewards read that text as JSON; a reward of your own gets the text (json.loads "
                    "it)", changed, where)
    return changed


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
    keep_shapes_as_text(rows, where)
    check_column_types(rows, where)
    try:
        check_references(rows, settings, where)
    except SettingsError as e:
        raise SettingsError(f"{e} (the file of evaluation.data_path [GRPO_EVALUATION__DATA_PATH])") from None
    return rows


def local_data_file(settings: DataSettings, cache_dir: Path) -> Path | None:
    """The local file behind `data.path` (downloading an s3:// object into the cache); None for Hub
    datasets and built-in generators."""
    path = settings.path
    if path.startswith("builtin:"):
        return None
    if path.startswith("s3://"):
        from grpo_job.store.s3 import download_object

        # a folder per object: runs sharing the cache may read `s3://a/train.jsonl` and `s3://b/train.jsonl`
        target = cache_dir / "data" / hashlib.sha256(path.encode()).hexdigest()[:12] / Path(path).name
        download_object(path, target)
        return target
    local = Path(path.removeprefix("file://"))
    return local if local.is_file() or saved_dataset(path) == "dataset" else None


def load_raw(settings: DataSettings, cache_dir: Path) -> tuple[list[Row], list[Row], str]:
    """(train rows, held-out rows, description of the source)."""
    if settings.path.startswith("builtin:"):
        gen = BUILTIN_DATASETS[settings.path.split(":", 1)[1]]
        return gen("train"), gen("test"), settings.path
    if saved_dataset(settings.path) == "dataset_dict":  # splits, as a Hub dataset has
        folder = Path(settings.path.removeprefix("file://"))
        if settings.eval_split:
            train, heldout = read_saved(folder, DATA_PATH, settings.split, settings.eval_split)
            return train, heldout, settings.path
        [train] = read_saved(folder, DATA_PATH, settings.split)
        return *hold_out(train, settings.eval_fraction, settings.seed), settings.path
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
    keep_shapes_as_text(train + heldout, where)
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
