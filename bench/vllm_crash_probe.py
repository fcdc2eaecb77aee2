"""Which vLLM settings crash on start-up: `vllm.LLM` built exactly as TRL 1.15's colocate mode builds
it (trl/generation/vllm_generation.py: external launcher, max_num_batched_tokens=4096,
max_num_seqs = completions per step per process, processed log-probs), one case per process, then a
sampled generation of `max_num_seqs` completions. Prints a table, writes JSON.

    python bench/vllm_crash_probe.py --model DIR --gpus 0 1 --out probe.json \\
        --case 384:64 --case 512:64 --case 768:64 --case 1024:64 --case 384:32 --case 384:64:eager

A case is MAX_MODEL_LEN:MAX_NUM_SEQS[:eager]; cases on one GPU run one after another, the GPUs in
parallel. A crashed case reports the last error line of its process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def one(model: str, max_len: int, seqs: int, eager: bool, util: float) -> None:
    """Child: build the engine as TRL does, generate, print one JSON line."""
    from vllm import LLM, SamplingParams

    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(29600 + int(os.environ.get("CUDA_VISIBLE_DEVICES", "0")[0])))
    t0 = time.monotonic()
    llm = LLM(model=model, gpu_memory_utilization=util, max_model_len=max_len, max_num_seqs=seqs,
              distributed_executor_backend="external_launcher", seed=0, max_num_batched_tokens=4096,
              logprobs_mode="processed_logprobs", enforce_eager=eager)
    t_init = time.monotonic() - t0
    prompts = [f"Question {i}: what is {i} + {i * 3}? Think step by step." for i in range(seqs)]
    t1 = time.monotonic()
    outs = llm.generate(prompts, SamplingParams(temperature=1.0, max_tokens=min(256, max_len - 64), seed=0))
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    print("RESULT " + json.dumps({"init_s": round(t_init, 1), "generate_s": round(time.monotonic() - t1, 2),
                                  "completions": len(outs), "tokens": tokens}), flush=True)


def run_case(model: str, gpu: str, case: str, util: float, logdir: Path) -> dict:
    parts = case.split(":")
    max_len, seqs, eager = int(parts[0]), int(parts[1]), len(parts) > 2 and parts[2] == "eager"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, __file__, "--one", model, str(max_len), str(seqs), str(int(eager)),
                        str(util)], capture_output=True, text=True, env=env, timeout=900)
    log = r.stdout + r.stderr
    (logdir / f"probe-{case.replace(':', '-')}.log").write_text(log)
    result = next((json.loads(line[7:]) for line in r.stdout.splitlines() if line.startswith("RESULT ")), None)
    errors = [line.strip() for line in log.splitlines() if "Error" in line or "error:" in line]
    return {"case": case, "max_model_len": max_len, "max_num_seqs": seqs, "enforce_eager": eager, "gpu": gpu,
            "ok": r.returncode == 0 and result is not None, "rc": r.returncode, "wall_s": round(time.monotonic() - t0),
            **(result or {}), "error": None if result else (errors[-1][:300] if errors else log[-300:])}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", float(sys.argv[6]))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--gpus", nargs="+", default=["0"])
    p.add_argument("--case", action="append", required=True)
    p.add_argument("--util", type=float, default=0.2)
    p.add_argument("--out", default="probe.json")
    a = p.parse_args()
    logdir = Path(a.out).parent
    queues: dict[str, list[str]] = {g: a.case[i::len(a.gpus)] for i, g in enumerate(a.gpus)}
    results: list[dict] = []

    def worker(gpu: str) -> None:
        for case in queues[gpu]:
            res = run_case(a.model, gpu, case, a.util, logdir)
            results.append(res)
            print(json.dumps(res), flush=True)

    threads = [threading.Thread(target=worker, args=(g,)) for g in a.gpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.sort(key=lambda r: a.case.index(r["case"]))
    print(f"\n{'max_model_len':>13} {'max_num_seqs':>12} {'eager':>5} {'result':>7} {'init s':>6}  error")
    for r in results:
        print(f"{r['max_model_len']:>13} {r['max_num_seqs']:>12} {str(r['enforce_eager']):>5} "
              f"{'ok' if r['ok'] else 'CRASH':>7} {r.get('init_s', '-')!s:>6}  {r['error'] or ''}")
    Path(a.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
