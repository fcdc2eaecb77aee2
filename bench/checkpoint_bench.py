"""Checkpoint benchmark (not a test): what checkpoint uploads cost training, and how fast they go.

1. Upload throughput to a loopback S3 endpoint (moto's server, boto3 over HTTP): a synthetic
   checkpoint (adapter + optimizer state) published with the job's own `checkpoints.publish`
   (sha256 manifest, transfer-manager upload, manifest last), and the bare `S3Store.put_dir`.
2. Training step time with and without a checkpoint upload on the same run: `entrypoint.py run`
   on the embedded default (SmolLM2-135M, CPU) with `save_steps=2`, so every other step interval
   contains a save plus a background upload and the others contain none. Also: how long the
   training thread is blocked per checkpoint (the trainer's own local save + our snapshot).

    python bench/checkpoint_bench.py [--steps 6] [--optimizer-mib 256] [--out bench/results/checkpoint_bench.json]

Prints a table and writes JSON. Needs the `test` extra (moto[server]).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from s3_server import CREDENTIALS, S3Server  # noqa: E402

from grpo_job import checkpoints  # noqa: E402
from grpo_job.store.s3 import S3Store, make_client  # noqa: E402

MiB = 1 << 20


def upload_throughput(server: S3Server, tmp: Path, optimizer_mib: int, repeats: int) -> dict:
    ck = tmp / "checkpoint-1"
    ck.mkdir(parents=True)
    (ck / "optimizer.pt").write_bytes(os.urandom(optimizer_mib * MiB))
    (ck / "adapter_model.safetensors").write_bytes(os.urandom(optimizer_mib // 2 * MiB))
    (ck / "trainer_state.json").write_text("{}")
    total = sum(p.stat().st_size for p in ck.iterdir())
    make_client().create_bucket(Bucket="bench")
    put_dir, publish = [], []
    for i in range(repeats):
        store = S3Store(f"s3://bench/runs/r{i}")
        t0 = time.perf_counter()
        store.put_dir(ck, "raw/checkpoint-1")
        put_dir.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        checkpoints.publish(store, ck, 1, keep_last=2)
        publish.append(time.perf_counter() - t0)
    return {
        "checkpoint_mib": round(total / MiB, 1),
        "put_dir_seconds": [round(x, 3) for x in put_dir],
        "put_dir_mib_per_s": round(total / MiB / statistics.median(put_dir), 1),
        "publish_seconds": [round(x, 3) for x in publish],
        "publish_mib_per_s": round(total / MiB / statistics.median(publish), 1),
    }


def training(server: S3Server, tmp: Path, steps: int) -> dict:
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "run", "--config", str(ROOT / "examples/smoke.yaml"),
           "--store.uri=s3://bench/runs", "--run_id=bench-train", f"--work_dir={tmp / 'work'}", "--log_format=json",
           "--export.merge=false", f"--train.max_steps={steps}", "--train.save_steps=2",
           '--rewards={"tests.reward_fixtures:length_reward": 1.0}']
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "HF_HUB_OFFLINE": "1", **CREDENTIALS,
           "AWS_ENDPOINT_URL_S3": server.url}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"training run failed (rc {r.returncode}):\n{r.stderr[-3000:]}")
    recs = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]

    def ts(rec: dict) -> float:
        return datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()

    step_at = {rec["metrics"]["step"]: ts(rec) for rec in recs if "loss" in rec.get("metrics", {})}
    queued = {rec["step"]: (ts(rec), rec["snapshot_seconds"]) for rec in recs if "snapshot_seconds" in rec}
    uploads = {rec["step"]: rec["upload"] for rec in recs if "upload" in rec}
    with_save, without = [], []
    for s in range(1, steps):
        if s in step_at and s + 1 in step_at:
            (with_save if s in queued else without).append(step_at[s + 1] - step_at[s])
    return {
        "steps": steps,
        "save_steps": 2,
        "interval_after_save_s": [round(x, 2) for x in with_save],
        "interval_without_save_s": [round(x, 2) for x in without],
        "mean_with_save_s": round(statistics.mean(with_save), 2) if with_save else None,
        "mean_without_save_s": round(statistics.mean(without), 2) if without else None,
        "blocked_per_save_s": {s: round(t - step_at[s], 3) for s, (t, _) in queued.items() if s in step_at},
        "snapshot_s": {s: snap for s, (_, snap) in queued.items()},
        "uploads": {s: {"mib": round(u["bytes"] / MiB, 1), "seconds": u["seconds"],
                        "mib_per_s": round(u["bytes"] / MiB / max(u["seconds"], 1e-6), 1)} for s, u in uploads.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="training steps (save every 2)")
    ap.add_argument("--optimizer-mib", type=int, default=256, help="size of the synthetic optimizer file")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench/results/checkpoint_bench.json"))
    a = ap.parse_args()
    os.environ.update(CREDENTIALS)
    server = S3Server()
    os.environ["AWS_ENDPOINT_URL_S3"] = server.url
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = {
                "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
                "endpoint": "moto ThreadedMotoServer on 127.0.0.1 (HTTP)",
                "upload": upload_throughput(server, Path(tmp) / "up", a.optimizer_mib, a.repeats),
            }
            if not a.skip_training:
                result["training"] = training(server, Path(tmp), a.steps)
    finally:
        server.stop()
    up = result["upload"]
    print(f"\nupload of a {up['checkpoint_mib']} MiB checkpoint to {result['endpoint']}")
    print(f"  {'put_dir (transfer manager)':34s} {up['put_dir_mib_per_s']:8.1f} MiB/s  {up['put_dir_seconds']}")
    print(f"  {'publish (sha256 + upload + manifest)':34s} {up['publish_mib_per_s']:8.1f} MiB/s  {up['publish_seconds']}")
    if "training" in result:
        t = result["training"]
        print(f"\ntraining, {t['steps']} steps, save every {t['save_steps']} (same run)")
        print(f"  {'step interval with save + upload':34s} {t['mean_with_save_s']} s  {t['interval_after_save_s']}")
        print(f"  {'step interval without':34s} {t['mean_without_save_s']} s  {t['interval_without_save_s']}")
        print(f"  {'training thread blocked per save':34s} {t['blocked_per_save_s']} s (snapshot {t['snapshot_s']})")
        for s, u in t["uploads"].items():
            print(f"  checkpoint-{s}: {u['mib']} MiB in {u['seconds']} s ({u['mib_per_s']} MiB/s, background)")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
