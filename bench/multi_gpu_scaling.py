"""Scaling of the train stage from 1 process to N at the same global batch: step time, completion
tokens/s and scaling efficiency, through `entrypoint.py launch` (torchrun) exactly as a user runs it.

    python bench/multi_gpu_scaling.py --processes 1 2 --global-batch 64 -- [job settings ...]

Each point is a fresh run (its own run id and store) of `--steps` steps with
per_device_train_batch_size = global batch / processes; step time is the median of the job's own
`step_time` records after `--skip` warm-up steps. Prints a table, writes JSON (`--out`).
On a CPU it runs with gloo (`--cpu`: --distributed.nproc_per_node is set), which only checks the
script; the numbers that matter come from GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_point(processes: int, args: argparse.Namespace, extra: list[str], server: bool = False) -> dict:
    """`server`: one training process next to a `trl vllm-serve` on a GPU of its own (2 GPUs in all)."""
    run_id = f"scale-{processes}p{'-server' if server else ''}-{int(time.time())}"
    store = Path(args.store)
    per_device = args.global_batch // processes
    if server:
        extra = [*extra, "--distributed.vllm_mode=server", "--distributed.vllm_server_gpus=1"]
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "launch", *extra,
           f"--run_id={run_id}", f"--store.uri={store}", f"--train.max_steps={args.steps}",
           f"--train.save_steps={args.steps + 1000}", f"--train.per_device_train_batch_size={per_device}",
           "--evaluation.enabled=false", "--report.enabled=false", "--health.preflight_samples=0",
           # a speed measurement: a random-weights model earns no reward, which the guards would stop (exit 3)
           "--health.zero_std_steps=0", "--health.zero_reward_steps=0",
           "--export.merge=false", "--export.quantizations=[]", "--log_format=json"]
    env = dict(os.environ)
    if args.cpu:
        cmd.append(f"--distributed.nproc_per_node={processes}")
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(processes + (1 if server else 0)))
    t0 = time.monotonic()
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    wall = time.monotonic() - t0
    metrics = store / run_id / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    steps = [r for r in records if "step_time" in r and r["step"] > args.skip]
    step_s = statistics.median(r["step_time"] for r in steps) if steps else None
    tokens = statistics.median(r["completions/mean_length"] * args.global_batch for r in steps) if steps else None
    return {"processes": processes, "vllm": "server" if server else "colocate", "per_device_train_batch_size": per_device, "rc": rc, "wall_s": round(wall, 1),
            "steps_measured": len(steps), "step_s": step_s,
            "completion_tokens_per_s": round(tokens / step_s, 1) if step_s else None, "run_id": run_id}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--global-batch", type=int, default=64, help="completions per optimizer step, all processes")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--skip", type=int, default=3, help="warm-up steps left out of the medians")
    p.add_argument("--store", default="/tmp/grpo-scaling")
    p.add_argument("--server", action="store_true",
                   help="also 1 training process + `trl vllm-serve` on a second GPU (vllm_mode=server)")
    p.add_argument("--cpu", action="store_true", help="gloo on CPU (a check of the script, not a benchmark)")
    p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "multi_gpu_scaling.json"))
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]
    points = [run_point(n, args, extra) for n in args.processes]
    if args.server:
        points.append(run_point(1, args, extra, server=True))
    base = next((pt for pt in points if pt["processes"] == min(args.processes) and pt["step_s"]), None)
    for pt in points:
        if base and pt["step_s"]:
            speedup = base["step_s"] / pt["step_s"]
            pt["speedup"] = round(speedup, 3)
            pt["scaling_efficiency"] = round(speedup / (pt["processes"] / base["processes"]), 3)
    print(f"{'procs':>5} {'vllm':>8} {'batch/dev':>9} {'rc':>3} {'step s':>8} {'tok/s':>9} {'speedup':>8} {'eff':>6} {'wall s':>7}")
    for pt in points:
        print(f"{pt['processes']:>5} {pt['vllm']:>8} {pt['per_device_train_batch_size']:>9} {pt['rc']:>3} "
              f"{pt['step_s'] if pt['step_s'] is not None else '-':>8} {pt['completion_tokens_per_s'] or '-':>9} "
              f"{pt.get('speedup', '-'):>8} {pt.get('scaling_efficiency', '-'):>6} {pt['wall_s']:>7}")
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                          "global_batch": args.global_batch, "steps": args.steps, "cpu": args.cpu,
                                          "settings": extra, "points": points}, indent=1))
    print(f"wrote {args.out}")
    return 0 if all(pt["rc"] == 0 for pt in points) else 1


if __name__ == "__main__":
    sys.exit(main())
