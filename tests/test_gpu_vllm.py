"""The trl engine with vLLM colocated on a real GPU, through the job itself: the settings that crashed
vLLM's CUDA-graph capture now run, and GRPO on the real Qwen 0.5B teaches the answer format.

Run on the device (`pytest -m gpu tests/test_gpu_vllm.py`); skipped without CUDA, vLLM or the model.
GRPO_GPU_QWEN_MODEL: the kit's Qwen2.5-Coder-0.5B-Instruct as a transformers folder (the job's own
dequantized copy of the GGUF); GRPO_GPU_GSM8K: a folder with GSM8K's train.jsonl and test.jsonl.
Each job runs in its own process, as in production (vLLM keeps process-wide state).
"""

import importlib.util
import json
import os
import subprocess
import sys
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

COMMON = (
    "--model.engine=trl", f"--model.name_or_path={MODEL}", "--model.gpu_memory_utilization=0.2",
    '--rewards={"format": 0.5, "correctness": 2.0}', '--health.zero_reward_exempt=["correctness"]',
    "--train.num_generations=8", "--export.merge=false", "--export.quantizations=[]", "--log_format=json",
)


def run_job(tmp: Path, *args: str, timeout: int = 1500) -> tuple[subprocess.CompletedProcess, Path]:
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "run", f"--store.uri={tmp / 'store'}",
           f"--work_dir={tmp / 'work'}", "--run_id=gpu-vllm", *COMMON, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    sys.stderr.write(r.stderr[-6000:])  # shown by pytest on failure
    return r, tmp / "store" / "gpu-vllm"


def test_short_max_seq_length_runs(tmp_path):
    """model.max_seq_length=384 with 64 completions per step: vLLM 0.26 crashed capturing CUDA graphs
    ("an illegal memory access") when the job passed it as max_model_len; now two steps run."""
    r, run = run_job(tmp_path, "--model.max_seq_length=384", "--data.path=builtin:arithmetic",
                     "--data.max_samples=64", "--train.per_device_train_batch_size=64",
                     "--train.max_prompt_length=192", "--train.max_completion_length=192", "--train.max_steps=2",
                     "--train.save_steps=2", "--evaluation.enabled=false", "--report.enabled=false",
                     "--health.preflight_samples=0")
    assert r.returncode == 0, r.stderr[-3000:]
    train = json.loads((run / "stages/train.json").read_text())
    assert train["engine"] == "trl" and train["steps"] == 2


@pytest.mark.skipif(not (GSM8K / "test.jsonl").is_file(), reason=f"no GSM8K at {GSM8K}")
def test_grpo_teaches_the_format(tmp_path):
    """Acceptance: the seed's recipe on GSM8K for 40 steps raises format compliance on 200 test rows,
    evaluated greedily through vLLM before and after (docs/benchmarks.md has the full-length run)."""
    r, run = run_job(tmp_path, "--model.max_seq_length=640", f"--data.path={GSM8K / 'train.jsonl'}",
                     f"--evaluation.data_path={GSM8K / 'test.jsonl'}", "--evaluation.max_samples=200",
                     "--evaluation.max_new_tokens=384", "--train.per_device_train_batch_size=64",
                     "--train.max_prompt_length=256", "--train.max_completion_length=384",
                     "--train.learning_rate=1e-5", "--train.max_steps=40", "--train.save_steps=40",
                     "--report.enabled=false")
    assert r.returncode == 0, r.stderr[-3000:]
    base = json.loads((run / "eval/base.json").read_text())
    trained = json.loads((run / "eval/trained.json").read_text())
    assert base["device"] == trained["device"] == "cuda (vllm)" and base["n"] == trained["n"] == 200
    assert trained["format_rate"] >= base["format_rate"] + 0.2, (base["format_rate"], trained["format_rate"])
