"""Engines: how the policy model is built and how generation runs. Everything above (settings,
data, rewards, stages) and below (TRL's GRPOTrainer, checkpoints, export) is shared.

- `trl`: transformers + peft + TRL's GRPOTrainer; runs on CPU, and on a GPU with vLLM colocated
  when vLLM is installed.
- `unsloth`: Unsloth's patched model with vLLM generating in the same process (`fast_inference`).

`import unsloth` must come before transformers/trl/peft are imported (it patches them), so the
unsloth engine imports it first thing in `load`, and nothing ML is imported before a stage runs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from grpo_job import distributed, machine
from grpo_job.settings import JobSettings, environment

log = logging.getLogger(__name__)


def pick_engine(settings: JobSettings) -> str:
    """`auto` -> `trl` (vLLM colocated) on a GPU with a 16-bit base model: on the H200 it ran a step in
    about 0.6x of Unsloth's time with a first step minutes sooner (docs/benchmarks.md). `unsloth` only
    where it wins, a 4-bit base model (`model.load_in_4bit`: QLoRA on a small card) in one process
    with Unsloth installed; `trl` everywhere else (CPU, several processes)."""
    if settings.model.engine != "auto":
        return settings.model.engine
    single = settings.train.resolved_world_size() == 1
    four_bit = settings.model.load_in_4bit
    m = machine.probe()
    return "unsloth" if four_bit and single and m.gpu and m.unsloth else "trl"


# vLLM 0.26 + TRL 1.15 colocate crashed in CUDA-graph capture ("an illegal memory access") with
# max_model_len 384 on Qwen2.5-0.5B (H200, one or two processes) and worked with 1024; the job asks
# vLLM for at least this many positions. Generation stays bounded by train.max_completion_length, and
# vLLM hands out KV-cache blocks as sequences grow, so a longer limit costs no memory.
VLLM_MIN_MODEL_LEN = 1024


# vLLM SamplingParams the job sets for TRL's colocated engine, under the user's own `generation_kwargs`.
# TRL 1.15 reads only the token ids and the sampled tokens' log-probs of vLLM's outputs and decodes the
# completions itself, yet vLLM by default detokenizes every sequence step by step and builds a dict and a
# Logprob object per generated token, in the one Python thread that also schedules the next decode step
# (colocate runs vLLM's engine core in the trainer's process). `flat_logprobs` keeps the same numbers in a few
# flat lists (vLLM's FlatLogprobs: a sequence of per-position dicts to its readers, as TRL's `extract_logprobs`
# iterates it), fewer objects for the garbage collector, whose passes cost with the trainer's whole heap.
# Qwen 0.5B, 256 completions of 384 tokens, H100: vLLM's generate inside the trainer 7.6 s -> 5.0 s, the
# job's step 3.22 -> 2.50 s (docs/benchmarks.md, "Eighth session"). Neither changes what is sampled or the
# log-probs TRL gets.
LEAN_VLLM_OUTPUTS: dict[str, Any] = {"detokenize": False, "flat_logprobs": True}


def vllm_generation_kwargs(user: dict[str, Any] | None) -> dict[str, Any]:
    """The `generation_kwargs` TRL's colocated vLLM gets: LEAN_VLLM_OUTPUTS under the user's own
    (`train.extra.generation_kwargs`, already converted); text is kept when the user asks for `stop`
    strings, which vLLM matches on the detokenized text (SamplingParams refuses `stop` without it)."""
    user = dict(user or {})
    lean = dict(LEAN_VLLM_OUTPUTS)
    if user.get("stop"):
        lean.pop("detokenize")
    return {**lean, **user}


def model_max_positions(model_path: str) -> int | None:
    """`max_position_embeddings` from a local model folder's config.json (None when unknown)."""
    cfg = Path(model_path) / "config.json"
    if not cfg.is_file():
        return None
    text = json.loads(cfg.read_text())
    value = text.get("max_position_embeddings") or (text.get("text_config") or {}).get("max_position_embeddings")
    return int(value) if value else None


def vllm_max_model_len(max_seq_length: int, model_max_positions: int | None) -> int:
    """vLLM's `max_model_len` for `model.max_seq_length`: at least VLLM_MIN_MODEL_LEN (see there), at
    most the model's own `max_position_embeddings` (vLLM refuses more), never below the setting."""
    length = max(max_seq_length, VLLM_MIN_MODEL_LEN)
    if model_max_positions:
        length = min(length, max(model_max_positions, max_seq_length))
    return length


# Optimizer steps one vLLM generation batch feeds under `train.steps_per_generation: auto`: measured on an
# H200 (Qwen 0.5B, 64 completions per step) at about 1.0 s per optimizer step against 2.2 s with one
# generation per step (docs/benchmarks.md). Further apart, the samples of the last steps grow stale, and 8
# did not pay on an H200 (a 512 batch took over twice a 256 one in vLLM; 0.237 accuracy after 100 steps
# against 0.248-0.299 at 4: docs/benchmarks.md, ninth session).
AUTO_STEPS_PER_GENERATION = 4
_GIB = 1024**3


def kv_cache_bytes_per_token(config: Any) -> int:
    """Bytes of vLLM's bf16 KV cache per token for a transformers model config (keys and values, every layer)."""
    cfg = getattr(config, "text_config", None) or config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    return 2 * cfg.num_hidden_layers * kv_heads * head_dim * 2


def steps_per_generation(s: JobSettings, *, vllm: bool, train_prompts: int, weight_bytes: int | None = None,
                         kv_bytes_per_token: int | None = None, gpu_bytes: int | None = None) -> tuple[int | None, str]:
    """GRPOConfig's `steps_per_generation` for `train.steps_per_generation` (None: TRL's default, which
    is gradient_accumulation_steps), and why. `auto` with vLLM colocated: AUTO_STEPS_PER_GENERATION
    optimizer steps per generation, fewer when the generation batch's prompts outnumber `train_prompts`
    or its sequences (max_prompt_length + max_completion_length tokens each, at `kv_bytes_per_token`)
    do not fit the KV cache vLLM gets (`model.gpu_memory_utilization` of `gpu_bytes`, less the
    `weight_bytes` and 1 GiB for activations); with vLLM as a server only the prompt count limits it."""
    t = s.train
    if t.steps_per_generation != "auto":
        return t.steps_per_generation, "train.steps_per_generation"
    if "generation_batch_size" in t.extra:
        return None, "train.extra.generation_batch_size sets the generation batch"
    if not vllm:
        return None, "no vLLM: one generation per optimizer step (TRL's default)"
    world = t.resolved_world_size()
    seq = t.max_prompt_length + t.max_completion_length
    colocated = s.distributed.vllm_mode == "colocate"
    budget = None
    if colocated and None not in (weight_bytes, kv_bytes_per_token, gpu_bytes):
        budget = s.model.gpu_memory_utilization * gpu_bytes - weight_bytes - _GIB
    for k in range(AUTO_STEPS_PER_GENERATION, 0, -1):
        micro = k * t.gradient_accumulation_steps
        completions = t.per_device_train_batch_size * micro  # one engine's share (each process has its own)
        prompts = completions * world // t.num_generations
        if k > 1 and prompts > train_prompts:
            continue
        if k > 1 and budget is not None and completions * seq * kv_bytes_per_token > budget:
            continue
        kv = "" if budget is None else (f"; KV cache for its {completions} x {seq} tokens: "
                                        f"{completions * seq * kv_bytes_per_token / _GIB:.1f} of ~{budget / _GIB:.0f} GiB")
        return micro, (f"auto: one vLLM batch of {completions * world} completions ({prompts} prompts) feeds {k} "
                       f"optimizer step{'s' if k > 1 else ''}{kv}")
    raise AssertionError("unreachable: k = 1 always fits")


def strategy_args(strategy: str) -> dict[str, Any]:
    """GRPOConfig arguments that make accelerate spread the training state (several processes only)."""
    if strategy == "fsdp":
        # FSDP2, one unit per decoder layer; the base model is loaded on rank 0 and broadcast
        return {"fsdp": "full_shard auto_wrap",
                "fsdp_config": {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                "cpu_ram_efficient_loading": True, "state_dict_type": "FULL_STATE_DICT"}}
    if strategy == "zero3":
        # "auto" values are filled in by transformers from the other GRPOConfig arguments
        return {"deepspeed": {
            "zero_optimization": {"stage": 3, "overlap_comm": True,
                                  "stage3_gather_16bit_weights_on_model_save": True},
            "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
            "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        }}
    # DDP: a LoRA with gradient checkpointing has no unused parameters; skipping the search saves a pass
    return {"ddp_find_unused_parameters": False}


class Engine(Protocol):
    name: str

    def load(self, model_path: str, s: JobSettings) -> tuple[Any, Any, Any]:
        """(model, tokenizer, peft_config or None when the model already carries the adapter)."""

    def grpo_args(self, s: JobSettings) -> dict[str, Any]:
        """Engine-specific GRPOConfig arguments (device, precision, generation backend)."""


def _fix_tokenizer(tok: Any) -> Any:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


class TrlEngine:
    name = "trl"

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()
        self.bf16 = self.cuda and torch.cuda.is_bf16_supported()
        self.vllm = self.cuda and machine.probe().vllm
        if self.cuda and not self.vllm:
            log.warning("vLLM is not installed: the trl engine generates with transformers' generate, about 7x "
                        "slower per step (docs/benchmarks.md); pip install '.[gpu]' for vLLM")

    def load(self, model_path: str, s: JobSettings) -> tuple[Any, Any, Any]:
        import torch
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = {"auto": torch.bfloat16 if self.bf16 else torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16, "float32": torch.float32}[s.model.dtype]
        kwargs: dict[str, Any] = {"dtype": dtype, "revision": s.model.revision}
        launch = distributed.current()
        if self.cuda and s.distributed.strategy == "ddp":
            # a whole copy on this process' GPU (torchrun: one GPU per local rank); sharded
            # strategies load on the CPU and let accelerate place the shards
            kwargs["device_map"] = {"": launch.local_rank}
            if s.model.load_in_4bit:
                from transformers import BitsAndBytesConfig

                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
                )
        elif s.model.load_in_4bit:
            log.info("model.load_in_4bit is ignored on CPU (bitsandbytes 4-bit needs CUDA)")
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
        tok = _fix_tokenizer(AutoTokenizer.from_pretrained(model_path, revision=s.model.revision))
        peft_config = LoraConfig(
            r=s.lora.r, lora_alpha=s.lora.lora_alpha, lora_dropout=s.lora.lora_dropout,
            target_modules=s.lora.target_modules, task_type="CAUSAL_LM",
        )
        return model, tok, peft_config

    def grpo_args(self, s: JobSettings) -> dict[str, Any]:
        args: dict[str, Any] = {"use_cpu": not self.cuda, "bf16": self.bf16}
        d, launch = s.distributed, distributed.current()
        if self.vllm:
            # capped at the model's own positions once it is loaded (train.py)
            args.update(use_vllm=True, vllm_mode=d.vllm_mode,
                        vllm_max_model_length=vllm_max_model_len(s.model.max_seq_length, None))
            if d.vllm_mode == "colocate":
                if not launch.multi:
                    # TRL colocate runs vLLM through torch.distributed's external launcher, which needs a
                    # process-group environment even for one process (torchrun sets it otherwise).
                    # A free port, not a fixed one: two one-GPU jobs on one machine collided on 29513
                    # (EADDRINUSE, H200 x2).
                    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                                 "MASTER_PORT": str(machine.free_port())}.items():
                        os.environ.setdefault(k, v)
                args.update(vllm_gpu_memory_utilization=s.model.gpu_memory_utilization,
                            vllm_tensor_parallel_size=d.vllm_tensor_parallel_size,
                            vllm_enable_sleep_mode=d.vllm_enable_sleep_mode,
                            generation_kwargs=vllm_generation_kwargs(
                                environment.grpo_config_extra(s.train.extra).get("generation_kwargs")))
            else:
                args.update(vllm_server_host=d.vllm_server_host, vllm_server_port=d.vllm_server_port,
                            vllm_server_timeout=d.vllm_server_timeout)
        if launch.multi or d.strategy != "ddp":  # FSDP / ZeRO-3 also apply to one process (e.g. to offload)
            args.update(strategy_args(d.strategy))
        return args


class UnslothEngine:
    """Unsloth's patched model with vLLM generating in the same process (`fast_inference=True`).

    TRL's GRPOTrainer runs underneath, patched by Unsloth at import: before each generation it hands
    the current LoRA tensors to vLLM (`load_lora(..., load_tensors=True)`), so a resumed run's
    restored adapter is what vLLM samples from at its first step (checked by tests/test_gpu.py).
    """

    name = "unsloth"

    def __init__(self) -> None:
        import unsloth  # noqa: F401  (first: it patches transformers, peft and trl before they are used)

    def load(self, model_path: str, s: JobSettings) -> tuple[Any, Any, Any]:
        from unsloth import FastLanguageModel

        model, tok = FastLanguageModel.from_pretrained(
            model_name=model_path,
            revision=s.model.revision,
            max_seq_length=s.model.max_seq_length,
            dtype=_unsloth_dtype(s),
            load_in_4bit=s.model.load_in_4bit,
            fast_inference=True,
            # vLLM sizes its LoRA slots for this rank; a smaller value than lora.r would reject the adapter
            max_lora_rank=s.lora.r,
            gpu_memory_utilization=s.model.gpu_memory_utilization,
        )
        model = FastLanguageModel.get_peft_model(
            model,
            r=s.lora.r,
            lora_alpha=s.lora.lora_alpha,
            lora_dropout=s.lora.lora_dropout,
            target_modules=s.lora.target_modules,
            use_gradient_checkpointing="unsloth",
            random_state=s.train.seed,
        )
        return model, _fix_tokenizer(tok), None

    def grpo_args(self, s: JobSettings) -> dict[str, Any]:
        import torch

        bf16 = torch.cuda.is_bf16_supported()
        return {"use_vllm": True, "bf16": bf16, "fp16": not bf16}

    def merge(self, base_path: str, adapter_dir: Path, out_dir: Path, s: JobSettings) -> dict[str, Any]:
        """Unsloth's own merged save: the base reloaded in 16 bits (never the 4-bit training copy),
        the adapter applied, `save_pretrained_merged(save_method="merged_16bit")`."""
        from unsloth import FastLanguageModel  # first, as in load

        # The adapter names the base by the path it was trained from; a restarted pod may have the
        # base elsewhere, so point it at the base this job resolved.
        cfg_path = adapter_dir / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = base_path
        cfg_path.write_text(json.dumps(cfg, indent=2))
        model, tok = FastLanguageModel.from_pretrained(
            model_name=str(adapter_dir),  # adapter_config.json names the base; Unsloth loads both
            max_seq_length=s.model.max_seq_length,
            dtype=_unsloth_dtype(s),
            load_in_4bit=False,
            fast_inference=False,  # no second vLLM engine just to merge
        )
        model.save_pretrained_merged(str(out_dir), tok, save_method="merged_16bit")
        return {"method": "unsloth save_pretrained_merged(merged_16bit)", "base": base_path}


def _unsloth_dtype(s: JobSettings) -> Any:
    """None lets Unsloth pick (bfloat16 where the GPU has it, else float16)."""
    if s.model.dtype in ("auto", "float32"):
        return None
    import torch

    return getattr(torch, s.model.dtype)


def get(name: str) -> Engine:
    if name == "unsloth":
        return UnslothEngine()
    return TrlEngine()
