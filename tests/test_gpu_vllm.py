"""The GPU path as production runs it: the acceptance suite of the trl engine with vLLM colocated.

Every test starts the job as a subprocess, as a container does: settings from `GRPO_*` variables
only (nothing from outside the test leaks in), stderr a pipe, so `log_format: auto` gives JSON logs,
and the job's own re-exec after `train`.

- `test_default_recipe_learns`: the defaults alone, pointed at the kit's real Qwen2.5-Coder-0.5B-Instruct
  and local GSM8K files, gain at least 15 points of test accuracy on the whole test split (1,319 rows,
  greedy, through vLLM before and after) in the default 100 optimizer steps.
- `test_sigterm_then_resume`: `model.max_seq_length=384` (it once crashed vLLM's CUDA-graph capture), a
  SIGTERM once checkpoint-2 is in the store gives exit 75; the next start resumes from it and ends.

Run on the device: `bash tests/gpu_device.sh` (stages the kit, then `pytest -m gpu`); skipped without
CUDA, vLLM or the model. GRPO_GPU_QWEN_MODEL: the Qwen model as a transformers folder (the job's own
dequantized copy of the kit's GGUF); GRPO_GPU_GSM8K: a folder with GSM8K's train.jsonl and test.jsonl;
GRPO_GPU_RUNS: where the run stores are kept (for docs/benchmarks.md; default: pytest's tmp).
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = Path(os.environ.get("GRPO_GPU_QWEN_MODEL", "/tmp/models/qwen05"))
GSM8K = Path(os.environ.get("GRPO_GPU_GSM8K", ROOT / ".gpu/data/gsm8k"))


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM"),
    pytest.mark.skipif(not (MODEL / "config.json").is_file(), reason=f"no model folder at {MODEL}"),
]


@pytest.fixture
def runs(tmp_path, request) -> Path:
    keep = os.environ.get("GRPO_GPU_RUNS")
    base = Path(keep) / request.node.name if keep else tmp_path
    base.mkdir(parents=True, exist_ok=True)
    return base


def job_env(base: Path, run_id: str, **settings: str) -> dict[str, str]:
    """The process environment of a production run: this one's, minus every GRPO_* variable, plus the
    run's settings as GRPO_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPO_")}
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", GRPO_RUN_ID=run_id, GRPO_STORE__URI=str(base / "store"),
               GRPO_WORK_DIR=str(base / "work"), GRPO_MODEL__NAME_OR_PATH=str(MODEL))
    env.update(settings)
    return env


def records(stderr: str) -> tuple[list[dict], list[str]]:
    """(JSON records, lines that are not JSON) of a job's stderr."""
    recs, raw = [], []
    for line in stderr.splitlines():
        try:
            recs.append(json.loads(line))
        except ValueError:
            raw.append(line)
    return recs, raw


def run_job(env: dict[str, str], log: Path, timeout: int = 1500) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, str(ROOT / "entrypoint.py"), "run"], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=timeout)
    log.write_text(r.stderr)
    sys.stderr.write(r.stderr[-6000:])  # shown by pytest on failure
    return r


@pytest.mark.skipif(not (GSM8K / "test.jsonl").is_file(), reason=f"no GSM8K at {GSM8K}")
def test_default_recipe_learns(runs):
    env = job_env(runs, "defaults", GRPO_DATA__PATH=str(GSM8K / "train.jsonl"),
                  GRPO_EVALUATION__DATA_PATH=str(GSM8K / "test.jsonl"),
                  # the product's steps on a file the tests own: merge and GGUF are tested elsewhere
                  GRPO_EXPORT__MERGE="false", GRPO_EXPORT__QUANTIZATIONS="[]")
    r = run_job(env, runs / "job.log")
    assert r.returncode == 0, r.stderr[-3000:]
    recs, raw = records(r.stderr)
    (runs / "not-json.txt").write_text("\n".join(raw))
    assert recs and recs[-1]["logger"] == "job", "the closing line is a JSON record"
    run = runs / "store" / "defaults"
    base = json.loads((run / "eval/base.json").read_text())
    trained = json.loads((run / "eval/trained.json").read_text())
    train = json.loads((run / "stages/train.json").read_text())
    print(f"accuracy {base['accuracy']:.3f} -> {trained['accuracy']:.3f}; format {base['format_rate']:.3f} -> "
          f"{trained['format_rate']:.3f}; {train['steps']} steps, {train['generation_plan']}; "
          f"{len(raw)} stderr lines not JSON; reward {base['reward']} -> {trained['reward']} {trained['rewards']}")
    assert base["device"] == trained["device"] == "cuda (vllm)"
    assert base["n"] == trained["n"] == 1319
    assert train["engine"] == "trl" and train["steps"] == 100
    assert trained["accuracy"] >= base["accuracy"] + 0.15, (base["accuracy"], trained["accuracy"])
    # the evaluation scores the run's own rewards on its answers, keyed by their settings names
    assert set(base["rewards"]) == set(trained["rewards"]) == {"format", "correctness"}
    assert trained["reward"] > base["reward"] + 0.3, (base["reward"], trained["reward"])


def test_sigterm_then_resume(runs):
    env = job_env(runs, "sigterm", GRPO_DATA__PATH="builtin:arithmetic", GRPO_DATA__MAX_SAMPLES="256",
                  GRPO_MODEL__MAX_SEQ_LENGTH="384", GRPO_MODEL__GPU_MEMORY_UTILIZATION="0.2",
                  GRPO_TRAIN__MAX_PROMPT_LENGTH="192", GRPO_TRAIN__MAX_COMPLETION_LENGTH="192",
                  GRPO_TRAIN__MAX_STEPS="12", GRPO_TRAIN__SAVE_STEPS="2", GRPO_EVALUATION__ENABLED="false",
                  GRPO_REPORT__ENABLED="false", GRPO_HEALTH__PREFLIGHT_SAMPLES="0", GRPO_EXPORT__MERGE="false",
                  GRPO_EXPORT__QUANTIZATIONS="[]")
    manifest = runs / "store/sigterm/checkpoints/checkpoint-2/manifest.json"
    with open(runs / "first.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "entrypoint.py"), "run"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 900
        while not manifest.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert manifest.is_file(), f"no checkpoint-2 in the store (exit {proc.poll()})"
        proc.send_signal(signal.SIGTERM)
        first = proc.wait(timeout=120)
    recs, _ = records((runs / "first.log").read_text())
    assert first == 75, (runs / "first.log").read_text()[-3000:]
    saved = [r for r in recs if r.get("msg", "").startswith("stop:")]
    assert saved, "the stop was logged"

    r = run_job(env, runs / "second.log")
    assert r.returncode == 0, r.stderr[-3000:]
    train = json.loads((runs / "store/sigterm/stages/train.json").read_text())
    assert train["engine"] == "trl" and train["steps"] == 12
    assert train["resumed_from"] is not None and train["resumed_from"] >= 2
    resumed = [r for r in records(r.stderr)[0] if r.get("msg", "").startswith("resumed from")]
    assert resumed, "the resume check was logged"
