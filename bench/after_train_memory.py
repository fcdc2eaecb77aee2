"""Benchmark: GPU memory in use during `evaluate_trained`, right after `train`, with and without the
fresh process (issue 17). Needs an NVIDIA GPU and `nvidia-smi`.

    python bench/after_train_memory.py --config examples/gpu-smollm2.yaml [--section.field=value ...] \
        [--out bench/results/after_train_memory.json] [--modes same,fresh]

Each mode is one whole `entrypoint.py run` (its own run id, in a fresh store under --work) with the
given settings, evaluation on and merge/export/publish off:

- `same process` (before the change): the job started through `cli.main(argv)`, which passes no
  restart, so the stages after `train` run in the process that trained (vLLM and the trainer still hold
  their memory);
- `fresh process` (now): `entrypoint.py run`, which re-executes itself after `train`.

The device's used memory (`nvidia-smi --query-gpu=memory.used`, every 0.2 s, all processes) is
sampled from this process; the peak between the job's "stage evaluate_trained: start" and "done" log
lines is reported, with the peak during `train` for scale. Prints a table and writes JSON.
`--modes same` or `--modes fresh` runs one half (each whole run of Qwen 0.5B takes about 3 minutes on an H100,
and a device call at most 10).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "same process": [sys.executable, "-c", "import sys; from grpo_job import cli; sys.exit(cli.main(sys.argv[1:]))"],
    "fresh process": [sys.executable, str(ROOT / "entrypoint.py")],
}


def used_mib(gpu: int) -> int:
    out = subprocess.run(["nvidia-smi", f"--id={gpu}", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[0])


def run_mode(name: str, argv: list[str], overrides: list[str], work: Path, gpu: int) -> dict:
    run_id = "mem-" + name.split()[0]
    cmd = [*argv, "run", f"--run_id={run_id}", f"--store.uri={work / 'runs'}", f"--work_dir={work / 'work'}",
           "--log_format=json", "--evaluation.enabled=true", "--export.merge=false", "--export.quantizations=[]",
           "--report.enabled=false", *overrides]
    samples: list[tuple[float, int]] = []
    events: dict[str, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.monotonic(), used_mib(gpu)))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        try:
            msg = json.loads(line).get("msg", "")
        except ValueError:
            continue
        for stage in ("train", "evaluate_trained"):
            if msg.startswith(f"stage {stage}: start"):
                events[f"{stage}_start"] = time.monotonic()
            elif msg.startswith(f"stage {stage}: done"):
                events[f"{stage}_done"] = time.monotonic()
    rc = proc.wait()
    done.set()
    sampler.join()

    def peak(stage: str) -> int | None:
        a, b = events.get(f"{stage}_start"), events.get(f"{stage}_done")
        inside = [m for t, m in samples if a is not None and b is not None and a <= t <= b]
        return max(inside) if inside else None

    return {"mode": name, "exit_code": rc, "peak_used_mib_train": peak("train"),
            "peak_used_mib_evaluate_trained": peak("evaluate_trained"),
            "evaluate_trained_seconds": round(events.get("evaluate_trained_done", 0) - events.get("evaluate_trained_start", 0), 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "bench/results/after_train_memory.json"))
    p.add_argument("--work", default="/tmp/grpo-after-train-memory")
    p.add_argument("--gpu", type=int, default=0)
    p.add_argument("--modes", default="same,fresh", help="the modes to run, comma-separated, by first word: same, fresh (default: both)")
    args, overrides = p.parse_known_args()
    wanted = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(wanted) - {name.split()[0] for name in MODES})
    if unknown or not wanted:
        p.error(f"--modes {args.modes!r}: each mode is one of {', '.join(n.split()[0] for n in MODES)}")
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    gpu_name = subprocess.run(["nvidia-smi", f"--id={args.gpu}", "--query-gpu=name,memory.total",
                               "--format=csv,noheader"], capture_output=True, text=True, check=True).stdout.strip()
    rows = [run_mode(name, argv, overrides, work / name.split()[0], args.gpu) for name, argv in MODES.items()
            if name.split()[0] in wanted]
    print(f"GPU {args.gpu}: {gpu_name}")
    print(f"{'mode':15s} {'exit':>4s} {'peak MiB train':>15s} {'peak MiB evaluate_trained':>26s} {'eval s':>7s}")
    for r in rows:
        print(f"{r['mode']:15s} {r['exit_code']:4d} {r['peak_used_mib_train']!s:>15s} "
              f"{r['peak_used_mib_evaluate_trained']!s:>26s} {r['evaluate_trained_seconds']:7.1f}")
    result = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "device": gpu_name, "overrides": overrides, "rows": rows,
              "command": "python bench/after_train_memory.py " + " ".join(sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
