"""The data section (`data`): where the dataset is, how its rows become prompts and answers, and the
forms a data path takes (a local file, an S3 object, a Hub dataset, `builtin:NAME`). Field names are
those of `datasets.load_dataset` and TRL's prompt formats."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from grpo_job.settings.base import Section, Seed, Share, check_s3_uri, check_uri_scheme

DEFAULT_SYSTEM_PROMPT = (
    "Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"
)

DATA_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
# `builtin:NAME` datasets (generated offline by grpo_job.data).
BUILTIN_DATASETS = ("arithmetic", "addition", "coding", "extraction")


def is_local_data_path(path: str) -> bool:
    """`data.path` / `evaluation.data_path` names a file on the machine (by its form, not its existence)."""
    return not path.startswith(("s3://", "builtin:")) and (
        path.lower().endswith(DATA_FILE_SUFFIXES) or path.startswith(("/", "./", "../", "file://")))


def saved_dataset(path: str) -> Literal["dataset", "dataset_dict"] | None:
    """What the local folder at `path` holds when `datasets`' `save_to_disk` wrote it: `dataset` (one
    split: `state.json`), `dataset_dict` (several: `dataset_dict.json`, a folder per split); None for
    anything else (a file, a missing path, another folder, an S3 or Hub or built-in path)."""
    if path.startswith(("s3://", "builtin:")):
        return None
    folder = Path(path.removeprefix("file://"))
    if (folder / "dataset_dict.json").is_file():
        return "dataset_dict"
    if (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file():
        return "dataset"
    return None


def is_data_file(path: str) -> bool:
    """`data.path` names one table (a local or S3 file, or a folder of one split saved by `datasets`),
    which the job splits itself (`data.eval_fraction`); a saved DatasetDict has splits, as the Hub's."""
    kind = saved_dataset(path)
    return path.startswith("s3://") or kind == "dataset" or (is_local_data_path(path) and kind is None)


def eval_fraction_applies(data: DataSettings) -> bool:
    """The held-out rows come from `data.eval_fraction` of the training rows: for a file (local or S3),
    and for a Hub dataset without `eval_split` (a built-in dataset has its own test split)."""
    return not data.path.startswith("builtin:") and (is_data_file(data.path) or not data.eval_split)


class FewShotExample(Section):
    """One worked example (TRL's prompt-completion names)."""

    prompt: str
    completion: str


class DataSettings(Section):
    path: str = "openai/gsm8k"
    """Where the dataset is: a Hub dataset id, a local .jsonl/.json/.parquet/.csv file, an
    `s3://bucket/key` object, or `builtin:arithmetic` (generated offline, for smoke runs)."""

    name: str | None = "main"
    """Dataset configuration name (`datasets.load_dataset(path, name)`); Hub datasets only."""

    split: str = "train"
    """Split used for training."""

    eval_split: str | None = "test"
    """Held-out split for evaluation; None holds out `eval_fraction` of the training split instead."""

    eval_fraction: Share = Field(0.05, ge=0.0, lt=1.0)
    """Share of the training rows held out (seeded shuffle) for a local or S3 file, and for a Hub
    dataset when `eval_split` is None; at least one row when above 0 and the file has two or more.
    0 holds out nothing: every row trains (evaluate with `evaluation.data_path`, or nothing)."""

    revision: str | None = None
    """Hub revision of the dataset; pin it for reproducible runs."""

    task: Literal["gsm8k", "math", "plain"] = "gsm8k"
    """How the reference answer is read from the answer column, and the default columns: `gsm8k`
    (`question`, `answer`; the final answer after `####`), `math` (`problem`, `solution`; the answer in
    the last `\\boxed{}`), `plain` (`prompt`, `answer`; the answer column as written)."""

    prompt_column: str | None = None
    """Column holding the prompt: text (TRL's standard format; sent as the user message) or a list of
    `{"role", "content"}` messages (TRL's conversational format; sent as they are). None: the task's. A nested
    field by its dotted name (`input.text`: field `text` of column `input`, as `datasets`' `flatten()` names it)."""

    answer_column: str | None = None
    """Column holding the reference solution/answer (read by the task, passed to the rewards as `answer`).
    None: the task's. A nested field by its dotted name, as for `prompt_column`."""

    prompt_template: str | None = None
    """Text around a text prompt, with `{prompt}` where the prompt goes and `{column}` where another column of
    the row goes (text as it is, a list or object as JSON; a dotted name reaches a nested field), e.g.
    `{prompt}\\nOptions: {choices}\\nPut the answer in \\boxed{}.`. Other braces are kept as written: LaTeX's
    (`\\frac{a}{b}`, `x^{n}`) and a `{name}` that no column has (warned of). None sends the prompt as it is."""

    prompt_format: Literal["auto", "chat", "plain"] = "auto"
    """How a prompt becomes the model's text (`grpo_job.chat.PromptRenderer`), in training, the preflight
    and evaluation alike: `chat` (the tokenizer's chat template, with `train.extra.chat_template_kwargs`),
    `plain` (TRL's standard, non-conversational prompts for base models: no template; the system prompt,
    few-shot texts and the prompt, inside `prompt_template`, joined by a blank line, are the whole text),
    `auto` (chat when the tokenizer has a chat template, else plain)."""

    few_shot: list[FewShotExample] = Field(default_factory=list)
    """Worked examples sent before every prompt, as user/assistant turns (after the system message)."""

    max_samples: int | None = Field(None, ge=1)
    """Use at most this many training rows (after shuffling); None uses all."""

    eval_samples: int | None = Field(None, ge=1)
    """Keep at most this many held-out rows; None keeps all."""

    seed: Seed = 0
    """Shuffle seed of the training rows."""

    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    """System message of every prompt (added to conversational prompts that have none); the built-in
    rewards expect the format it asks for. None or empty: no system message is sent (for chat templates
    that reject the `system` role, e.g. Gemma's)."""

    answer_type: Literal["auto", "math", "exact"] = "auto"
    """How an answer is compared with the reference (`grpo_job.answers`), by the correctness reward
    and the evaluation alike: `math` (math-verify: numbers, LaTeX, fractions, percentages), `exact`
    (the string, whitespace and final punctuation normalised, case kept: `Yes` = `Yes!`, `yes` != `Yes`),
    `auto` (math when the reference parses as math, else the string with case folded too)."""

    @field_validator("prompt_column", "answer_column", mode="before")
    @classmethod
    def _dotted_not_nested(cls, v: object) -> object:
        # `prompt_column: {item: statement}` in YAML is a mapping; the nested field's name is its dotted path
        path, value = [], v
        while isinstance(value, dict) and len(value) == 1:
            key, value = next(iter(value.items()))
            path.append(str(key))
        if path:
            raise ValueError(f"a nested field is named by its dotted path, {'.'.join([*path, str(value)])!r}, not "
                             "by a mapping")
        return v

    @field_validator("task", mode="before")
    @classmethod
    def _task_is_how_the_answer_is_read(cls, v: object) -> object:
        # a code or structured-output task is no task value of its own (trial: GRPO_DATA__TASK=code)
        kind = {"code": "code", "coding": "code", "python": "code", "json": "json_schema", "json_schema": "json_schema",
                "extraction": "json_schema", "structured": "json_schema"}.get(str(v).strip().lower())
        if kind is not None:
            raise ValueError(f"task {v!r} is no task: data.task says how the reference answer is read (gsm8k, math or "
                             f"plain); a {'code' if kind == 'code' else 'structured-output'} task is task plain scored "
                             f"by the {kind!r} reward (rewards.{kind}, e.g. GRPO_REWARDS='{{\"{kind}\": 1.0}}')")
        return v

    @field_validator("system_prompt")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v if v and v.strip() else None

    @field_validator("prompt_template")
    @classmethod
    def _template_has_slot(cls, v: str | None) -> str | None:
        if v is not None and "{prompt}" not in v:
            raise ValueError("the prompt template needs `{prompt}` where the prompt goes")
        return v

    @field_validator("path")
    @classmethod
    def _path_form(cls, v: str) -> str:
        if v.startswith("s3://"):
            return check_s3_uri(v)
        check_uri_scheme(v, "data.path")
        if v.startswith("builtin:"):
            if v.split(":", 1)[1] not in BUILTIN_DATASETS:
                raise ValueError(f"unknown built-in dataset {v!r}; choose one of {sorted(BUILTIN_DATASETS)}")
            return v
        if is_local_data_path(v) or saved_dataset(v):
            return v  # a local file: whether it exists is checked where the job runs (settings.environment)
        if not re.match(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$", v):
            raise ValueError(
                f"{v!r} is neither a Hub dataset id (owner/name), a local file ({', '.join(DATA_FILE_SUFFIXES)}) or "
                "folder saved by datasets (here: give it as ./path or /abs/path), "
                "an s3:// URI nor builtin:NAME"
            )
        return v
