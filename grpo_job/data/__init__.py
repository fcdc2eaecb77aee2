"""Datasets (this package): load rows from the Hub, a local file, S3 or a built-in generator, and turn each row into a
chat prompt plus a reference answer, keeping every other column for the rewards.

A row's prompt comes from `data.prompt_column`: text (TRL's standard format, sent as the user message,
inside `data.prompt_template` when set) or a list of `{"role", "content"}` messages (TRL's conversational
format, sent as they are). The system prompt and few-shot turns go in front. The reference answer is read
from `data.answer_column` by the task (`gsm8k`: after `####`; `math`: the last `\\boxed{}`; `plain`: as
written). The prepared rows are JSON lines `{<every source column>, "prompt": [messages], "answer": "72"}`,
written to the run's store by the prepare-data stage so that every later stage (and a restarted pod) reads
the same data whatever happens to the source; TRL passes every column but `prompt` to the rewards as
keyword arguments.

Modules, by job: `tasks` (reference solution -> answer, the columns a task reads), `files` (reading one local
table: a file or a `save_to_disk` folder), `sources` (loading and mapping rows, the held-out split, `prepare`), `checks` (the data checks before any model loads), `generated`
(the built-in `builtin:` datasets). The names below are the package's interface.
"""

from grpo_job.data.checks import (  # noqa: F401
    check_column_types,
    check_columns,
    check_prompts,
    check_references,
    close_columns,
    excerpt,
    hold_out_note,
    trl_columns_note,
)
from grpo_job.data.files import (  # noqa: F401
    DATA_PATH,
    EVALUATION_DATA_PATH,
    TEXT_ENCODING,
    peek_columns,
    read_rows,
    saved_dict_columns,
)
from grpo_job.data.generated import (  # noqa: F401
    BUILTIN_DATASETS,
    EXTRACTION_SCHEMA,
    generate_addition,
    generate_arithmetic,
    generate_coding,
    generate_extraction,
)
from grpo_job.data.sources import (  # noqa: F401
    build_prompt,
    evaluation_rows,
    from_jsonl,
    hold_out,
    load_raw,
    local_data_file,
    map_rows,
    prepare,
    to_jsonl,
)
from grpo_job.data.tasks import (  # noqa: F401
    ANSWER,
    TASKS,
    TRL_PROMPT_COLUMN,
    TRL_REFERENCE_COLUMNS,
    TRL_REWARD_ARGS,
    Row,
    Task,
    boxed_answer,
    columns_of,
    gsm8k_answer,
)
