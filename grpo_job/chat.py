"""The model's chat template, read without torch: find the template and the tokenizer in a model folder
(or a GGUF file's metadata), render the prompts the job will send with transformers' own renderer
(`render_jinja_template`, what `apply_chat_template` calls), and count their tokens with the `tokenizers`
library (what the fast tokenizer runs; `apply_chat_template(tokenize=True)` adds no special tokens).

`check` and the prepare_data stage use it to stop a run whose template rejects the messages (a
Gemma-style template raises on a `system` message), whose prompts are all longer than
`train.max_prompt_length`, or whose generation prompt already opens a tag that a reward expects the
completion to start with (a `<think>` template against `think_format_reward`), before any model is loaded.

`PromptRenderer` is the one way the job turns a prepared row's prompt (chat messages) into the text and
token ids the model sees, as TRL's GRPOTrainer does: `data.prompt_format` chat (the chat template, with
`train.extra.chat_template_kwargs`, GRPOConfig's field, as TRL passes it; no special tokens added) or
plain (TRL's standard, non-conversational prompts: the message contents joined by a blank line, tokenized
as TRL tokenizes a text prompt, with the tokenizer's special tokens). `check`'s length counts, the
prepare_data filter, the train stage (rows handed to TRL, the long-prompt filter), the reward preflight
and both evaluations (the vLLM child gets the token ids) all use it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from grpo_job.errors import SettingsError
from grpo_job.settings import DEFAULT_SYSTEM_PROMPT, ModelSettings

# The tokenizer files `from_pretrained` reads (no weights): enough to render and count.
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "config.json"]  # config.json: the context length (check_context)
_SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


@dataclass
class ChatTemplate:
    """A model's chat template (None when it has none), the special tokens the template may use
    (`bos_token`…, as `apply_chat_template` passes them) and the tokenizer (None: cannot count tokens)."""

    source: str
    template: str | dict[str, str] | None
    special_tokens: dict[str, str] = field(default_factory=dict)
    tokenizer: Any = None  # tokenizers.Tokenizer

    @property
    def has_template(self) -> bool:
        t = self.template
        return bool(t.get("default") if isinstance(t, dict) else t)

    def render(self, messages: list[dict[str, Any]], **template_kwargs: Any) -> str:
        """The text of one prompt with the generation prompt appended, as the trainer renders it
        (`template_kwargs`: `chat_template_kwargs`, passed to the template as `apply_chat_template` does).
        Raises SettingsError when there is no template; the template's own exception otherwise."""
        from transformers.utils.chat_template_utils import render_jinja_template

        template = self.template
        if isinstance(template, dict):
            template = template.get("default")
        if not template:
            raise SettingsError(
                f"the model's tokenizer ({self.source}) has no chat template, so the job cannot turn its chat prompts "
                "into chat text, and data.prompt_format='chat' asks for it. Set GRPO_DATA__PROMPT_FORMAT=plain (or auto) "
                "to send the prompt as plain text (TRL's standard format, for base models), use an instruct/chat model "
                "(GRPO_MODEL__NAME_OR_PATH), or add a `chat_template.jinja` to the model folder"
            )
        rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                            add_generation_prompt=True, **{**self.special_tokens, **template_kwargs})
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
    from grpo_job import models

    fields = models.gguf_fields(path)
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
    from grpo_job import machine, models

    if ms.gguf_file:
        machine.probe()  # dequantizing imports torch, and Triton with it
    path = models.resolve(ms, cache_dir)
    if Path(path).is_dir():
        return from_folder(Path(path))
    from huggingface_hub import snapshot_download

    folder = snapshot_download(path, revision=ms.revision, allow_patterns=TOKENIZER_FILES)
    return from_folder(Path(folder))


# ---------------------------------------------------------------- one prompt renderer for every stage
PLAIN_SEPARATOR = "\n\n"

# Rewards that score a completion only when it starts with an opening tag: (reward name, tag). A chat
# template whose generation prompt already opens a tag (`<think>`) makes every completion start inside
# it, so these rewards can never score (trl#6966, open-r1#560).
OPENING_TAG_REWARDS = {
    "think_format_reward": "think",  # trl.rewards: ^<think>(?!.*<think>)(.*?)</think>.*$
    "format": "reasoning",  # grpo_job.rewards.format_reward: ^\s*<reasoning>...</reasoning>\s*<answer>...</answer>
}
_OPEN_TAG_AT_END = re.compile(r"<([A-Za-z_][\w:-]*)(?:\s[^<>]*)?>\s*$")


def plain_text(messages: list[dict[str, Any]]) -> str:
    """A plain (non-conversational) prompt from the prepared messages: their contents, system prompt and
    few-shot turns first, joined by a blank line; nothing else is added (no role names, no template)."""
    return PLAIN_SEPARATOR.join(str(m["content"]) for m in messages if m.get("content"))


def resolve_format(setting: str, chat: ChatTemplate) -> Literal["chat", "plain"]:
    """`data.prompt_format` for this tokenizer: auto is chat when it has a chat template, else plain.
    Raises SettingsError when chat is asked for and there is no template."""
    if setting == "plain":
        return "plain"
    if chat.has_template:
        return "chat"
    if setting == "chat":
        raise SettingsError(
            f"data.prompt_format='chat' but the model's tokenizer ({chat.source}) has no chat template; set "
            "GRPO_DATA__PROMPT_FORMAT=plain (or auto) to send plain-text prompts (TRL's standard format, what a base "
            "model reads; put the whole text in GRPO_DATA__PROMPT_TEMPLATE), or use an instruct/chat model")
    return "plain"


@dataclass
class PromptRenderer:
    """The text and token ids of a prompt exactly as the trainer builds them (see the module docstring).
    `format` is resolved (chat or plain); `template_kwargs` is `train.extra.chat_template_kwargs`."""

    chat: ChatTemplate
    format: Literal["chat", "plain"]
    template_kwargs: dict[str, Any] = field(default_factory=dict)

    def text(self, prompt: list[dict[str, Any]] | str) -> str:
        """The whole text the model sees before its completion."""
        if isinstance(prompt, str):  # already a plain prompt (a row handed to TRL)
            return prompt
        if self.format == "plain":
            return plain_text(prompt)
        return self.chat.render(prompt, **self.template_kwargs)

    def token_ids(self, prompt: list[dict[str, Any]] | str) -> list[int] | None:
        """The prompt's token ids as TRL tokenizes it: a rendered chat prompt without added special tokens
        (`apply_chat_template(tokenize=True)`), a text prompt with them (`processing_class(text=...)`).
        None when there is no `tokenizer.json`."""
        if self.chat.tokenizer is None:
            return None
        return self.chat.tokenizer.encode(self.text(prompt), add_special_tokens=self.format == "plain").ids

    def count(self, prompt: list[dict[str, Any]] | str) -> int | None:
        ids = self.token_ids(prompt)
        return None if ids is None else len(ids)

    @property
    def add_special_tokens(self) -> bool:
        """How a transformers tokenizer must encode `text(...)` to get `token_ids(...)`."""
        return self.format == "plain"

    def for_trainer(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows as TRL takes them: chat messages as they are (TRL applies the template with the same
        `chat_template_kwargs`), plain prompts as one text (TRL's standard `prompt` column)."""
        if self.format == "chat":
            return rows
        return [{**r, "prompt": self.text(r["prompt"])} for r in rows]

    def opening_tag(self, messages: list[dict[str, Any]]) -> str | None:
        """The tag the rendered generation prompt ends by opening (`think` for `...<think>\\n`), else None."""
        if self.format == "plain":
            return None  # the user's own text: the prompt template is what it is meant to be
        found = _OPEN_TAG_AT_END.search(self.text(messages))
        return found.group(1) if found else None


def template_kwargs(s: Any) -> dict[str, Any]:
    """`train.extra.chat_template_kwargs` (GRPOConfig's field, what TRL passes to the chat template)."""
    return dict(s.train.extra.get("chat_template_kwargs") or {})


def renderer(s: Any, chat: ChatTemplate) -> PromptRenderer:
    """The job's renderer (settings `s`: JobSettings) for the model's tokenizer `chat`."""
    return PromptRenderer(chat, resolve_format(s.data.prompt_format, chat), template_kwargs(s))


def reward_name(name: str, entry: Any) -> str:
    """The reward a `rewards` entry runs (its key, or an entry's `func` when it names one)."""
    func = getattr(entry, "func", None) or (entry.get("func") if isinstance(entry, dict) else None)
    return str(func or name)


def check_opening_tag(s: Any, render: PromptRenderer, messages: list[dict[str, Any]]) -> None:
    """Stop (SettingsError) when the generation prompt ends by opening a tag while a configured reward
    expects the completion itself to start with an opening tag: no completion could ever score it."""
    tag = render.opening_tag(messages)
    if tag is None:
        return
    for name, entry in s.rewards.items():
        want = OPENING_TAG_REWARDS.get(reward_name(name, entry))
        if want is None:
            continue
        kw = render.template_kwargs
        remedy = (f"to score completions that start inside <{tag}>, use a reward that does not expect the opening tag "
                  f"(e.g. drop rewards.{name}, or a `module:function` reward matching `...</{tag}>`)")
        tpl = render.chat.template
        if "enable_thinking" in (json.dumps(tpl) if isinstance(tpl, dict) else str(tpl)):
            remedy = ("turn thinking off in the template with GRPO_TRAIN__EXTRA='{\"chat_template_kwargs\": "
                      "{\"enable_thinking\": false}}' (TRL passes it to the template; the job renders with it too)"
                      + (f", currently {kw}" if kw else "") + "; or " + remedy)
        else:
            remedy += "; or use a model whose template does not open the tag (this one does not read enable_thinking)"
        raise SettingsError(
            f"the chat template of {render.chat.source} ends the generation prompt with an opening <{tag}> tag, so "
            f"every completion starts inside it, but reward {name!r} scores a completion only when it starts with "
            f"<{want}>: it would score 0 on every well-formed completion (trl#6966). To fix: {remedy}")


# Rewards that score a completion only by its `<answer>` block (grpo_job.rewards.builtin), which a model writes
# when a prompt asks for it: data.system_prompt does, unless a row's own system message replaces it.
ANSWER_FORMAT_REWARDS = ("format", "partial_format", "correctness", "integer_answer")


def answer_format_readers(s: Any) -> list[str]:
    """The `rewards` entries (settings names) that read the `<answer>` format (ANSWER_FORMAT_REWARDS)."""
    return [name for name, entry in s.rewards.items() if reward_name(name, entry) in ANSWER_FORMAT_REWARDS]


def own_system_messages(s: Any, rows: list[dict[str, Any]]) -> int:
    """How many prepared `rows` bring a system message of their own, which replaces data.system_prompt."""
    return sum(bool(r["prompt"]) and r["prompt"][0]["role"] == "system"
               and r["prompt"][0]["content"] != s.data.system_prompt for r in rows)


def instruction_place(s: Any, rows: list[dict[str, Any]]) -> str:
    """Where the instruction the model gets is set, for advice that says to change it: the rows' own system
    messages when they bring them (trial: advice to set GRPO_DATA__SYSTEM_PROMPT, which those rows replace)."""
    if own_system_messages(s, rows):
        return "the rows' own system messages (they replace GRPO_DATA__SYSTEM_PROMPT)"
    return "GRPO_DATA__SYSTEM_PROMPT"


def check_format_asked(s: Any, rows: list[dict[str, Any]]) -> None:
    """Stop (SettingsError) when a configured reward reads the `<answer>` format but no training prompt (its
    system message, few-shot turns or text, `rows`: prepared rows) mentions `<answer>`: the model is never
    asked for the format, so the reward could score only by chance (trial: a dataset's own system message
    replaced data.system_prompt without a word)."""
    readers = answer_format_readers(s)
    if not readers or not rows or any("<answer>" in m["content"] for r in rows for m in r["prompt"]):
        return
    if own := own_system_messages(s, rows):
        why = (f"{own} of {len(rows)} rows bring their own system message, which replaces data.system_prompt (the "
               "instruction that asks for the format)")
        ask = "in the rows' system messages (or drop those, so that data.system_prompt is sent)"
    else:
        why = ("data.system_prompt is " + ("off" if s.data.system_prompt is None else "set without it")
               + " and neither data.prompt_template nor data.few_shot shows it")
        ask = "in GRPO_DATA__SYSTEM_PROMPT (or GRPO_DATA__PROMPT_TEMPLATE, which wraps text prompts only)"
    raise SettingsError(
        f"rewards {', '.join(readers)} score the <reasoning>/<answer> format (correctness reads the <answer> block), "
        f"but no training prompt mentions <answer>: {why}, so the model is never asked for it. Ask for the format "
        f"{ask} (data.system_prompt's default: {DEFAULT_SYSTEM_PROMPT!r}), show it with data.few_shot examples "
        "(GRPO_DATA__FEW_SHOT), or use rewards that read the completion as it is")


def check_lengths(s: Any, positions: int | None, where: str) -> None:
    """Stop (SettingsError) when the lengths asked for do not fit the model's context (`positions`:
    its `max_position_embeddings`; None: unknown, not checked)."""
    if not positions:
        return
    t, m = s.train, s.model
    need = t.max_prompt_length + t.max_completion_length
    if need > positions:
        raise SettingsError(
            f"train.max_prompt_length + train.max_completion_length = {t.max_prompt_length} + "
            f"{t.max_completion_length} = {need} tokens, more than the model's context length of {positions} tokens "
            f"(max_position_embeddings in {where}); lower GRPO_TRAIN__MAX_PROMPT_LENGTH and/or "
            f"GRPO_TRAIN__MAX_COMPLETION_LENGTH so their sum is at most {positions}")
    if m.max_seq_length > positions:
        raise SettingsError(
            f"model.max_seq_length={m.max_seq_length} is more than the model's context length of {positions} tokens "
            f"(max_position_embeddings in {where}); set GRPO_MODEL__MAX_SEQ_LENGTH to at most {positions} (and at "
            f"least max_prompt_length + max_completion_length = {need})")


def check_context(s: Any, cache_dir: Path) -> None:
    """`check_lengths` against the model's context length as far as it can be read on this machine
    (`grpo_job.models.context_length`: config.json or a GGUF's metadata; nothing downloaded)."""
    from grpo_job import models

    check_lengths(s, *models.context_length(s.model, cache_dir))
