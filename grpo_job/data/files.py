"""Reading one local table the user gives: a .jsonl/.json/.csv/.parquet file, or a folder written by
`datasets`' `save_to_disk` (a Dataset, or a DatasetDict's split). Errors name the setting the path came
from (`data.path` or `evaluation.data_path`) and what to change; values come back as written (narrow
floats as their shortest decimal)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from grpo_job.data.tasks import Row
from grpo_job.errors import SettingsError
from grpo_job.settings import DataSettings
from grpo_job.settings.data import saved_dataset

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


def _json_rows(data: Any, path: Path, setting: tuple[str, str]) -> list[Row]:
    """The rows of a .json file: an array of objects, or an object whose `data` key holds one (the form
    `datasets` writes with `to_json(lines=False)`). Raises SettingsError naming what was found instead."""
    shape = ("a .json file is an array of row objects ([{...}, {...}]) or an object with the array under "
             "\"data\"; JSON Lines (.jsonl) holds one row object per line")
    rows = data.get("data") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        found = f"an object with keys {sorted(data)[:10]}" if isinstance(data, dict) else type(data).__name__
        raise SettingsError(f"{_file(path, setting)}: {shape}; found {found}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise SettingsError(f"{_file(path, setting)}: element {i} of the array is {type(row).__name__} "
                                f"{json.dumps(row, ensure_ascii=False, default=str)[:100]}, not a row object; {shape}")
    return rows


def _load_saved(path: Path, setting: tuple[str, str]) -> Any:
    """The `datasets.Dataset` or `DatasetDict` in a folder written by `save_to_disk`."""
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError, IndexError) as e:
        # IndexError: datasets 4 cannot load back a split saved with no rows and no shard
        fix = ("; a split saved with no rows cannot be read back: save it again with rows in every split, or "
               "without the empty one") if isinstance(e, IndexError) else ""
        raise SettingsError(f"cannot read the saved dataset {_file(path, setting)}: {type(e).__name__}: {e}{fix}") from None


# the settings that name the splits `read_saved` is given, in its order
_SPLIT_SETTINGS = ("data.split [GRPO_DATA__SPLIT]", "data.eval_split [GRPO_DATA__EVAL_SPLIT]")


def _split(saved: Any, split: str | None, path: Path, setting: tuple[str, str], named: str) -> Any:
    """`saved` itself (a Dataset), or its `split` (a DatasetDict: one of its splits must be named, by the setting
    `named`: data.split or data.eval_split)."""
    if not hasattr(saved, "keys"):
        return saved
    if split not in saved:
        hold_out = ("; or data.eval_split=null to hold out data.eval_fraction of the training split"
                    if "eval_split" in named else "")
        raise SettingsError(f"the saved DatasetDict folder {str(path)!r} ({setting[0]} [{setting[1]}]) has splits "
                            f"{sorted(saved)}, not {split!r}, which {named} names: set it to one of them{hold_out}")
    return saved[split]


def read_saved(path: Path, setting: tuple[str, str], *splits: str) -> list[list[Row]]:
    """The rows of each of `splits` of a folder written by `save_to_disk` (no split named: the rows of
    its Dataset), read from one load; SettingsError for a folder datasets cannot read, a split that is not
    there or has no rows, naming the setting to change."""
    saved = _load_saved(path, setting)
    out = []
    for split, named in zip(splits or (None,), _SPLIT_SETTINGS, strict=False):
        table = _split(saved, split, path, setting, named)
        rows = _as_written(table.to_list(), _narrow_floats(table.features))
        if not rows and split is not None:
            raise SettingsError(f"split {split!r} of the saved DatasetDict {_file(path, setting)} has no rows; name "
                                "splits with rows in data.split [GRPO_DATA__SPLIT] and data.eval_split "
                                "[GRPO_DATA__EVAL_SPLIT], or set data.eval_split=null to hold out data.eval_fraction "
                                "of the training split")
        if not rows:
            raise _no_rows(path, setting)
        out.append(rows)
    return out


def _narrow_floats(features: Any) -> dict[str, str]:
    """Columns of 16- or 32-bit floats in a datasets/Arrow schema (`datasets.Features` or a pyarrow
    schema), with their numpy type name: Python reads them as doubles, so 0.8 stored in float32 arrives
    as 0.800000011920929."""
    arrow = {"halffloat": "float16", "float": "float32", "float16": "float16", "float32": "float32"}
    if hasattr(features, "names"):  # pyarrow schema
        return {f.name: arrow[str(f.type)] for f in features if str(f.type) in arrow}
    return {name: f.dtype for name, f in features.items() if getattr(f, "dtype", None) in ("float32", "float16")}


def _as_written(rows: list[Row], columns: dict[str, str]) -> list[Row]:
    """`columns`' values as the shortest decimals their narrow float type holds (0.8, not
    0.800000011920929), so a reference answer reads as it was written."""
    if not columns:
        return rows
    import numpy as np

    for row in rows:
        for name, dtype in columns.items():
            if isinstance(row.get(name), float):
                row[name] = float(str(getattr(np, dtype)(row[name])))
    return rows


def saved_dict_columns(settings: DataSettings) -> list[str]:
    """Column names of `data.split` of the DatasetDict folder at `data.path` (used by `check`); raises
    SettingsError when it lacks `data.split` or `data.eval_split`."""
    folder = Path(settings.path.removeprefix("file://"))
    saved = _load_saved(folder, DATA_PATH)
    if settings.eval_split:
        _split(saved, settings.eval_split, folder, DATA_PATH, _SPLIT_SETTINGS[1])
    return list(_split(saved, settings.split, folder, DATA_PATH, _SPLIT_SETTINGS[0]).column_names)


def read_rows(path: Path, setting: tuple[str, str] = DATA_PATH) -> list[Row]:
    """Every row of a local .jsonl/.json/.csv/.parquet file, or of a folder of one split saved by
    `datasets` (`Dataset.save_to_disk`). Raises SettingsError naming `setting` (the one the path came
    from: `DATA_PATH` or `EVALUATION_DATA_PATH`) for an unreadable file, a malformed JSONL line (with its
    line number) or a file without rows."""
    if saved_dataset(str(path)) == "dataset":
        return read_saved(path, setting)[0]
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv", ".parquet"):
        raise SettingsError(f"{_file(path, setting)}: unsupported file type {suffix!r}: use .jsonl, .json, .csv "
                            "or .parquet")
    try:
        if suffix == ".jsonl":
            rows = _read_jsonl(path, setting)
        elif suffix == ".json":
            rows = _json_rows(json.loads(path.read_text(encoding=TEXT_ENCODING)), path, setting)
        elif suffix == ".csv":
            with path.open(newline="", encoding=TEXT_ENCODING) as f:
                rows = _csv_rows(f, _file(path, setting))
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            rows = _as_written(table.to_pylist(), _narrow_floats(table.schema))
    except (ValueError, OSError) as e:
        raise SettingsError(f"cannot read {_file(path, setting)}: {e}") from None
    if not rows:
        raise _no_rows(path, setting)
    return rows


def _csv_delimiter(f: Any) -> str:
    """A CSV file's delimiter: of `,`, `;`, tab and `|`, the one that splits the header line (quotes kept, as the
    csv module reads them) into the most columns, `,` on a tie. A spreadsheet saves `;` where the decimal mark is a
    comma; read as commas, the whole header was one column (trial), and a header name holding a comma (`"note, free
    text"`) must not make it a comma file. Leaves `f` at its start."""
    header = f.readline()
    f.seek(0)
    return max(",;\t|", key=lambda d: len(next(csv.reader([header], delimiter=d), [])))


def _csv_rows(f: Any, where: str) -> list[Row]:
    """The rows of an open CSV file; SettingsError for a column name given twice (DictReader keeps the last
    column's values under it without a word: trial)."""
    reader = csv.DictReader(f, delimiter=_csv_delimiter(f))
    names = reader.fieldnames or []
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SettingsError(f"{where}: column(s) {twice} appear twice in the header {names}; rename one of each")
    return list(reader)


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
                header = next(csv.reader(f, delimiter=_csv_delimiter(f)), None)
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
