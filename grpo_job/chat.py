"""The model's chat template, read without torch: find the template and the tokenizer in a model folder
(or a GGUF file's metadata), render the prompts the job will send with transformers' own renderer
(`render_jinja_template`, what `apply_chat_template` calls), and count their tokens with the `tokenizers`
library (what the fast tokenizer runs; `apply_chat_template(tokenize=True)` adds no special tokens).

`check` and the prepare_data stage use it to stop a run whose model has no chat template, whose template
rejects the messages (a Gemma-style template raises on a `system` message), or whose prompts are all
longer than `train.max_prompt_length`, before any model is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpo_job.errors import SettingsError
from grpo_job.settings import ModelSettings

# The tokenizer files `from_pretrained` reads (no weights): enough to render and count.
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json"]
_SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


@dataclass
class ChatTemplate:
    """A model's chat template (None when it has none), the special tokens the template may use
    (`bos_token`…, as `apply_chat_template` passes them) and the tokenizer (None: cannot count tokens)."""

    source: str
    template: str | dict[str, str] | None
    special_tokens: dict[str, str] = field(default_factory=dict)
    tokenizer: Any = None  # tokenizers.Tokenizer

    def render(self, messages: list[dict[str, Any]]) -> str:
        """The text of one prompt with the generation prompt appended, as the trainer renders it.
        Raises SettingsError when there is no template; the template's own exception otherwise."""
        from transformers.utils.chat_template_utils import render_jinja_template

        template = self.template
        if isinstance(template, dict):
            template = template.get("default")
        if not template:
            raise SettingsError(
                f"the model's tokenizer ({self.source}) has no chat template, so the job cannot turn its chat prompts "
                "into text. Use an instruct/chat model (GRPO_MODEL__NAME_OR_PATH), or add a `chat_template.jinja` to "
                "the model folder"
            )
        rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                            add_generation_prompt=True, **self.special_tokens)
        return rendered[0]

    def count_tokens(self, text: str) -> int | None:
        """Tokens of a rendered prompt; None when no `tokenizer.json` was found."""
        if self.tokenizer is None:
            return None
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # a serialised AddedToken
        return value.get("content")
    return value if isinstance(value, str) else None


def from_folder(folder: Path) -> ChatTemplate:
    """The chat template and tokenizer of a transformers model folder (transformers' file layout:
    `chat_template.jinja`, else `chat_template.json`, else `chat_template` in `tokenizer_config.json`)."""
    config = {}
    if (folder / "tokenizer_config.json").is_file():
        config = json.loads((folder / "tokenizer_config.json").read_text())
    template: str | dict[str, str] | None = None
    if (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text()
    elif (folder / "chat_template.json").is_file():
        template = json.loads((folder / "chat_template.json").read_text()).get("chat_template")
    else:
        template = config.get("chat_template")
    if isinstance(template, list):  # several named templates
        template = {t["name"]: t["template"] for t in template}
    special = {}
    if (folder / "special_tokens_map.json").is_file():
        special.update(json.loads((folder / "special_tokens_map.json").read_text()))
    special.update({k: config[k] for k in _SPECIAL if k in config})
    tokens = {k: t for k in _SPECIAL if (t := _token_text(special.get(k))) is not None}
    tokenizer = None
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    return ChatTemplate(str(folder), template, tokens, tokenizer)


def from_gguf(path: Path) -> ChatTemplate:
    """The chat template in a GGUF file's metadata (`tokenizer.chat_template`); tokens cannot be
    counted from it without building the tokenizer (the prepare_data stage counts them)."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields
    tpl = fields.get("tokenizer.chat_template")
    template = tpl.contents() if tpl is not None else None
    tokens = fields.get("tokenizer.ggml.tokens")
    special = {}
    for name in ("bos", "eos", "unknown", "padding"):
        f = fields.get(f"tokenizer.ggml.{name}_token_id")
        if f is not None and tokens is not None:
            key = {"unknown": "unk", "padding": "pad"}.get(name, name) + "_token"
            special[key] = tokens.contents(int(f.contents()))
    return ChatTemplate(str(path), template, special, None)


def for_check(ms: ModelSettings, cache_dir: Path) -> ChatTemplate | None:
    """What `check` can read without a download: a local or packaged model folder, a GGUF file (the
    dequantized copy in the cache when there is one), a Hub model's tokenizer files in the local Hub
    cache. None when the tokenizer is not on this machine yet (prepare_data checks it after downloading)."""
    from grpo_job import models

    src = models.source_dir(ms)
    if ms.gguf_file:
        cached = models.dequantized_dir(Path(src) / ms.gguf_file, cache_dir)
        return from_folder(cached) if cached.is_dir() else from_gguf(Path(src) / ms.gguf_file)
    if Path(src).is_dir():
        return from_folder(Path(src))
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(src, "tokenizer_config.json", revision=ms.revision)
    return from_folder(Path(found).parent) if isinstance(found, str) else None


def for_run(ms: ModelSettings, cache_dir: Path) -> ChatTemplate:
    """The tokenizer the trainer will use: the resolved model folder (a GGUF is dequantized once, into
    the cache the later stages use), or a Hub model's tokenizer files (downloaded, weights excluded)."""
    from grpo_job import models
    from grpo_job.training import engines

    if ms.gguf_file:
        engines.use_triton_interpreter_without_gpu()  # dequantizing imports torch, and Triton with it
    path = models.resolve(ms, cache_dir)
    if Path(path).is_dir():
        return from_folder(Path(path))
    from huggingface_hub import snapshot_download

    folder = snapshot_download(path, revision=ms.revision, allow_patterns=TOKENIZER_FILES)
    return from_folder(Path(folder))
