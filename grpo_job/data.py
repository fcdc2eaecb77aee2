"""Datasets: load rows from the Hub, a local file, S3 or a built-in generator, and map them to
chat prompts plus a reference answer with a named task.

The prepared rows are JSON lines `{"prompt": [system, user messages], "answer": "72"}`, written to
the run's store by the prepare-data stage so that every later stage (and a restarted pod) reads the
same data whatever happens to the source.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from grpo_job.errors import SettingsError
from grpo_job.settings import DataSettings

Row = dict[str, Any]


# ---------------------------------------------------------------- tasks: raw row -> prompt + answer
def gsm8k_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: the text after `####`, commas stripped."""
    return solution.split("####")[-1].strip().replace(",", "")


def map_gsm8k(row: Row, system_prompt: str) -> Row:
    return {
        "prompt": [{"role": "system", "content": system_prompt}, {"role": "user", "content": row["question"]}],
        "answer": gsm8k_answer(str(row["answer"])),
    }


# task name -> (required columns, mapper)
TASKS: dict[str, tuple[tuple[str, ...], Callable[[Row, str], Row]]] = {
    "gsm8k": (("question", "answer"), map_gsm8k),
}


def check_columns(columns: Iterable[str], task: str, where: str) -> None:
    required, _ = TASKS[task]
    found = list(columns)
    missing = [c for c in required if c not in found]
    if missing:
        raise SettingsError(
            f"dataset {where} lacks column(s) {missing} that task {task!r} needs; it has {found}. "
            f"Point GRPO_DATA__PATH at data with columns {list(required)} or choose another GRPO_DATA__TASK"
        )


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


# ---------------------------------------------------------------- sources
def _read_file(path: Path) -> list[Row]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with path.open() as f:
                return [json.loads(line) for line in f if line.strip()]
        if suffix == ".json":
            data = json.loads(path.read_text())
            return data if isinstance(data, list) else data.get("data", [])
        if suffix == ".csv":
            with path.open(newline="") as f:
                return list(csv.DictReader(f))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except (ValueError, OSError) as e:
        raise SettingsError(f"cannot read data file {str(path)!r}: {e}") from None
    raise SettingsError(f"unsupported data file type {suffix!r}: use .jsonl, .json, .csv or .parquet")


def peek_columns(path: Path) -> list[str]:
    """Column names of a local data file, reading only its head (used by `check`)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with path.open() as f:
                first = next((line for line in f if line.strip()), None)
            return list(json.loads(first)) if first else []
        if suffix == ".csv":
            with path.open(newline="") as f:
                return next(csv.reader(f), [])
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_schema(path).names
    except (ValueError, OSError) as e:
        raise SettingsError(f"cannot read data file {str(path)!r}: {e}") from None
    rows = _read_file(path)
    return list(rows[0]) if rows else []


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
        rows = _read_file(file)
        rng = random.Random(settings.seed)
        order = list(range(len(rows)))
        rng.shuffle(order)
        # at least one held-out row, but never all of them
        n_eval = min(max(1, round(len(rows) * settings.eval_fraction)), len(rows) - 1)
        held = {order[i] for i in range(max(n_eval, 0))}
        train = [r for i, r in enumerate(rows) if i not in held]
        heldout = [r for i, r in enumerate(rows) if i in held]
        return train, heldout, settings.path
    return _load_hub(settings)


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
        n_eval = max(1, round(len(train) * settings.eval_fraction))
        heldout, train = train[:n_eval], train[n_eval:]
    where = f"{settings.path}@{settings.revision or 'main'}"
    return train, heldout, where


def prepare(settings: DataSettings, cache_dir: Path) -> tuple[list[Row], list[Row], dict[str, Any]]:
    """Load, map with the task, shuffle and cap: (train prompts, eval prompts, summary)."""
    train_raw, eval_raw, where = load_raw(settings, cache_dir)
    if train_raw or eval_raw:
        check_columns((train_raw or eval_raw)[0].keys(), settings.task, where)
    if not train_raw:
        raise SettingsError(f"dataset {where} has no training rows")
    _, mapper = TASKS[settings.task]
    rng = random.Random(settings.seed)
    rng.shuffle(train_raw)
    if settings.max_samples:
        train_raw = train_raw[: settings.max_samples]
    if settings.eval_samples:
        eval_raw = eval_raw[: settings.eval_samples]
    train = [mapper(r, settings.system_prompt) for r in train_raw]
    heldout = [mapper(r, settings.system_prompt) for r in eval_raw]
    summary = {"source": where, "task": settings.task, "train_rows": len(train), "eval_rows": len(heldout)}
    return train, heldout, summary


def to_jsonl(rows: list[Row]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def from_jsonl(text: str) -> list[Row]:
    # split on "\n" only: str.splitlines() also splits inside strings at U+2028 and friends (GSM8K has them)
    return [json.loads(line) for line in text.split("\n") if line.strip()]
