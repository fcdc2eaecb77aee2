"""Process start to first GRPO step, cold and warm: the job run as a fresh process, twice, with every
compile cache (vLLM, torch.compile/Inductor, Triton, CUDA, Unsloth) under one folder, as the image
puts them under its `/cache` volume (Dockerfile ENV). The first run fills the folder (cold), the
second, a new process on the same machine with a new run id, finds it filled (warm, a restarted pod).

    python bench/restart_gpu.py --model DIR --cache /tmp/cache-a --runs 2 --out restart.json -- [settings...]
    python bench/restart_gpu.py --root /old/checkout ...   # the same with another checkout's job

"First step" is the moment the job's first metrics record (logged after step 1) reaches
metrics.jsonl. The model folder is given already dequantized, so the times leave that once-only step
out. Prints a table, writes JSON with each run's exit code and last error line.
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


def cache_env(cache: Path) -> dict[str, str]:
    """The Dockerfile's cache variables, rooted at `cache`."""
    return {"XDG_CACHE_HOME": str(cache), "TRITON_CACHE_DIR": str(cache / "triton"),
            "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor"), "VLLM_CACHE_ROOT": str(cache / "vllm"),
            "CUDA_CACHE_PATH": str(cache / "nv"), "UNSLOTH_COMPILE_LOCATION": str(cache / "unsloth_compiled_cache")}


def run_once(root: Path, label: str, cache: Path, work: Path, extra: list[str], logdir: Path) -> dict:
    run_id = f"restart-{label}-{int(time.time())}"
    cmd = [sys.executable, str(root / "entrypoint.py"), "run", f"--run_id={run_id}", f"--work_dir={work}",
           f"--store.uri={work / 'store'}", *extra]
    env = {**os.environ, **cache_env(cache), "PYTHONUNBUFFERED": "1"}
    log_path = logdir / f"{label}.log"
    metrics = work / "runs" / run_id / "metrics.jsonl"
    t0 = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        first = None
        while proc.poll() is None:
            if first is None and metrics.exists() and metrics.stat().st_size > 0:
                first = time.monotonic() - t0
            time.sleep(0.25)
    wall = time.monotonic() - t0
    if first is None and metrics.exists() and metrics.stat().st_size > 0:
        first = wall
    text = log_path.read_text(errors="replace")
    errors = [ln.strip() for ln in text.splitlines() if "Error" in ln or "error" in ln.lower().split(":")[0]]
    records = [json.loads(ln) for ln in metrics.read_text().splitlines()] if metrics.exists() else []
    steps = [r["step_time"] for r in records if "step_time" in r]
    return {"label": label, "root": str(root), "rc": proc.returncode, "first_step_s": None if first is None else
            round(first, 1), "wall_s": round(wall, 1), "steps": len(records),
            "step_s": steps[-1] if steps else None, "last_error": errors[-1][:400] if errors and proc.returncode else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT), help="checkout whose entrypoint.py runs")
    p.add_argument("--label", default="run")
    p.add_argument("--cache", required=True, help="folder of the compile caches (emptied first)")
    p.add_argument("--work", default="/tmp/grpo-restart")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--out", default="restart.json")
    p.add_argument("extra", nargs=argparse.REMAINDER)
    a = p.parse_args()
    extra = [x for x in a.extra if x != "--"]
    cache = Path(a.cache)
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    cache.mkdir(parents=True)
    logdir = Path(a.out).parent
    results = []
    for i in range(a.runs):
        label = f"{a.label}-{'cold' if i == 0 else f'warm{i}'}"
        results.append(run_once(Path(a.root), label, cache, Path(a.work), extra, logdir))
        print(json.dumps(results[-1]), flush=True)
    print(f"\n{'run':<22} {'rc':>3} {'first step s':>12} {'wall s':>7} {'steps':>5}  error")
    for r in results:
        print(f"{r['label']:<22} {r['rc']:>3} {r['first_step_s']!s:>12} {r['wall_s']:>7} {r['steps']:>5}  "
              f"{r['last_error'] or ''}")
    out = Path(a.out)
    old = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps(old + results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
