"""Artifacts from a trained adapter: the LoRA merged into a 16-bit copy of the base model.

The merged folder (safetensors, config, tokenizer with its chat template) goes to `merged/` in the
run store, where the GGUF export and the Hub push pick it up.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from job import engines, models

if TYPE_CHECKING:
    from job.pipeline import RunContext

log = logging.getLogger(__name__)


def merge(ctx: RunContext) -> dict[str, Any]:
    """The LoRA merged into the base model loaded in 16 bits (never the 4-bit training copy): Unsloth's
    merged save on the unsloth engine, else peft's merge_and_unload."""
    s = ctx.settings
    adapter_dir = ctx.work_dir / "adapter"
    ctx.store.get_dir("adapter", adapter_dir)
    base_path = models.resolve(s.model, ctx.cache_dir)
    out = ctx.work_dir / "merged"
    if engines.pick_engine(s) == "unsloth":
        summary = engines.UnslothEngine().merge(base_path, adapter_dir, out, s)
        return {**summary, "files": len(ctx.store.put_dir(out, "merged"))}

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    if not torch.cuda.is_available():
        dtype = torch.bfloat16  # merge in bf16 on CPU too: that is what gets shipped
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, revision=s.model.revision)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    tok = AutoTokenizer.from_pretrained(str(adapter_dir))
    merged.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    keys = ctx.store.put_dir(out, "merged")
    return {"base": base_path, "dtype": str(dtype).removeprefix("torch."), "files": len(keys)}
