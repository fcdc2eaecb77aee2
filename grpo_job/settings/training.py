"""The training sections: GRPO's hyper-parameters (`train`, GRPOConfig's argument names) and how the
training is spread over processes and GPUs (`distributed`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from grpo_job.settings.base import Section, Seed, Share


class TrainSettings(Section):
    """GRPO hyper-parameters; each field is the GRPOConfig argument of the same name."""

    learning_rate: float = Field(1e-4, gt=0.0, le=1.0)
    """Peak learning rate. A LoRA (alpha/r = 1) wants about 10x a full fine-tune's rate: on Qwen2.5 0.5B,
    GSM8K, 100 steps, 1e-4 took test accuracy +21 points and 1e-5 +6 (docs/benchmarks.md); the seed
    recipe's 5e-6 (examples/seed-recipe.yaml) is a full-fine-tuning rate."""

    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule after warm-up."""

    warmup_steps: Share = Field(0.05, ge=0.0)
    """Linear warm-up: a float in [0, 1) (or a percentage, `5%`) is a share of `max_steps`, rounded up, a whole
    number is a step count. Warm-up trains its first step at learning rate 0, so a share that rounds to one step
    (5% of up to 20 steps) trains without warm-up, as does a 1-step run."""

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

    seed: Seed = 3407
    """Seed of sampling, LoRA initialisation and data order."""

    extra: dict[str, Any] = Field(default_factory=dict)
    """Any other GRPOConfig argument, passed through as is: e.g. `{epsilon_high: 0.28, top_p: 0.95,
    scale_rewards: batch, mask_truncated_completions: true, num_iterations: 2, steps_per_generation: 4}`.
    Names are checked against the installed GRPOConfig by `check` and `run` (unknown ones are errors);
    a name that has its own field here (e.g. `learning_rate`) must be set there, not in `extra`. From
    the environment: `GRPO_TRAIN__EXTRA='{"top_p": 0.95}'` or `GRPO_TRAIN__EXTRA__TOP_P=0.95`, whose text is
    read as a YAML scalar (`settings.sources.read_env_text`); values from a file or JSON stay as written. Each
    value reaches GRPOConfig as its argument's type (`settings.environment.grpo_config_extra`)."""

    world_size: int | None = Field(None, ge=1)
    """Training processes in all, used to check the batch; None takes the launcher's WORLD_SIZE
    (torchrun, `accelerate launch`, `entrypoint.py launch`), or 1 when not launched."""

    def resolved_world_size(self) -> int:
        from grpo_job import distributed

        return self.world_size or distributed.current().world_size


class DistributedSettings(Section):
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
