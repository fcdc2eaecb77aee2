"""End to end on CPU: the real SmolLM2-135M-Instruct, real GRPO steps, checkpoints in a local store,
the LoRA weights changed, and a second run skips finished stages."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.job_env import job_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
# a user reward with guaranteed variance (length), so every step has nonzero advantages; the CLI's
# rewards replace the config's, so the built-in one the test looks for is named again
ARGS = ("--train.max_steps=3", "--train.save_steps=2", "--export.merge=false",
        '--rewards={"partial_format": 0.5, "tests.reward_fixtures:length_reward": 1.0}')


def run_job(tmp_path, *extra, timeout=1500):
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "run", "--config", str(ROOT / "examples" / "smoke.yaml"),
           f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'work'}", "--log_format=json", *extra]
    env = job_env(tmp_path)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def test_smoke_run_trains_checkpoints_and_skips_on_rerun(tmp_path):
    r = run_job(tmp_path, *ARGS)
    assert r.returncode == 0, r.stderr[-4000:]
    records = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    steps = [rec["metrics"] for rec in records if "metrics" in rec and "loss" in rec["metrics"]]
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert all("reward" in s and "rewards/partial_format_reward/mean" in s and "rewards/length_reward/mean" in s
               for s in steps)

    run = tmp_path / "runs" / "smoke"
    assert (run / "checkpoints/checkpoint-2/manifest.json").is_file()
    assert (run / "stages/train.json").is_file() and (run / "adapter/adapter_model.safetensors").is_file()
    # each reward's settings name leads to its key in the metrics, in the train stage's summary and its log
    names = {"partial_format": "rewards/partial_format_reward/mean",
             "tests.reward_fixtures:length_reward": "rewards/length_reward/mean"}
    assert json.loads((run / "stages/train.json").read_text())["reward_metrics"] == names
    assert next(rec["reward_metrics"] for rec in records if "reward_metrics" in rec) == names
    assert all(key in s for s in steps for key in names.values())

    # LoRA B starts at zero: any nonzero B means optimizer steps changed the adapter.
    weights = load_file(run / "adapter/adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(torch.count_nonzero(v) > 0 for v in lora_b)

    again = run_job(tmp_path, *ARGS)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "stage train: already done, skipped" in again.stderr
    assert '"loss"' not in again.stderr


def test_smoke_settings_give_a_learning_signal(tmp_path):
    """The shipped smoke run itself (its own rewards and built-in task): the tiny model earns
    non-zero, varying reward, so GRPO gets non-zero advantages, loss and gradients."""
    r = run_job(tmp_path, "--train.max_steps=2", "--train.save_steps=2", "--export.merge=false",
                "--evaluation.enabled=false", "--report.enabled=false", "--health.preflight_samples=0")
    assert r.returncode == 0, r.stderr[-4000:]
    records = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    steps = [rec["metrics"] for rec in records if "metrics" in rec and "loss" in rec["metrics"]]
    assert len(steps) == 2
    assert any(s["reward_std"] > 0 and s["grad_norm"] > 0 for s in steps), steps
