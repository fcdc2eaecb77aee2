"""One-shot evaluation start-up on a GPU: the job's vLLM evaluation child on a whole test split, timed end to
end (process start, imports, engine start, generation), with the one-shot engine settings
(`grpo_job.evaluate.one_shot_engine_args`) and, for comparison, vLLM's defaults (torch.compile + CUDA graphs).

    # device, kit staged (tests/gpu_device.sh); prints a table and writes $OUT/eval_start.json
    python3 bench/eval_start_gpu.py --model /tmp/models/qwen05 --data /tmp/gpu-stage/gsm8k/test.jsonl [--default]

The prompts are the job's own (data.task gsm8k, the default system prompt); generation is greedy with up to
384 new tokens, as the evaluate stages do with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--max-new-tokens", type=int, default=384)
    p.add_argument("--default", action="store_true", help="also time vLLM's default engine settings")
    a = p.parse_args()
    from grpo_job import data, evaluate
    from grpo_job.settings import JobSettings
    from grpo_job.training import engines

    s = JobSettings()
    rows = data.evaluation_rows(a.data, s.data)
    from grpo_job import chat

    # the child generates from token ids rendered by the job's one prompt renderer, as the evaluation stage sends them
    render = chat.renderer(s, chat.from_folder(Path(a.model)))
    prompts = [{"prompt_token_ids": render.token_ids(r["prompt"])} for r in rows]
    out_dir = Path(os.environ.get("OUT", "/tmp/out"))
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for one_shot in [True, False] if a.default else [True]:
        job = {"model": a.model, "revision": None, "prompts": prompts,
               "max_new_tokens": a.max_new_tokens, "gpu_memory_utilization": s.model.gpu_memory_utilization,
               "seed": 0, "temperature": 0.0, "adapter": None, "max_lora_rank": 32, "one_shot": one_shot,
               "max_model_len": engines.vllm_max_model_len(s.model.max_seq_length, engines.model_max_positions(a.model))}
        work = Path("/tmp/eval-start")
        work.mkdir(exist_ok=True)
        (work / "job.json").write_text(json.dumps(job))
        t0 = time.monotonic()
        rc = subprocess.run([sys.executable, "-m", "grpo_job.evaluate", str(work / "job.json"), str(work / "out.json")],
                            cwd=ROOT).returncode
        wall = time.monotonic() - t0
        if rc:
            print(f"one_shot={one_shot}: the child exited {rc}")
            return rc
        out = json.loads((work / "out.json").read_text())
        texts = [g[0] for g in out["generations"]]
        m = evaluate.score(texts, [len(g[1]) for g in out["generations"]], [str(r["answer"]) for r in rows],
                           a.max_new_tokens)
        results.append({"engine_settings": "one-shot" if one_shot else "vLLM defaults", "rows": len(rows),
                        "end_to_end_s": round(wall, 1), "imports_s": out["import_s"], "engine_ready_s": out["init_s"], "generate_s": out["generate_s"],
                        "accuracy": round(m["accuracy"], 4), "format_rate": round(m["format_rate"], 4),
                        "mean_length": round(m["mean_length"], 1)})
    cols = list(results[0])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    (out_dir / "eval_start.json").write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "argv": sys.argv,
                                                          "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
