"""Engine choice and the vLLM settings the job derives (no GPU needed: pure functions of the settings)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_job import machine
from grpo_job.settings import load_settings
from grpo_job.training import engines


@pytest.mark.parametrize(("max_seq_length", "model_positions", "expected"), [
    (384, 32768, 1024),    # the crash case: vLLM gets at least VLLM_MIN_MODEL_LEN
    (1024, 32768, 1024),
    (4096, 32768, 4096),   # longer settings pass through
    (384, None, 1024),     # model not read yet (GRPOConfig is built before the model loads)
    (384, 512, 512),       # never beyond the model's own positions (vLLM refuses more)...
    (2048, 1024, 2048),    # ...nor below the setting: vLLM then names the conflict itself
])
def test_vllm_max_model_len(max_seq_length, model_positions, expected):
    assert engines.vllm_max_model_len(max_seq_length, model_positions) == expected


@pytest.mark.parametrize(("user", "expected"), [
    (None, {"detokenize": False, "flat_logprobs": True}),
    ({"ignore_eos": True}, {"detokenize": False, "flat_logprobs": True, "ignore_eos": True}),
    # the user's own win, key by key
    ({"detokenize": True}, {"detokenize": True, "flat_logprobs": True}),
    ({"flat_logprobs": False}, {"detokenize": False, "flat_logprobs": False}),
    # vLLM matches stop strings on the text: SamplingParams refuses `stop` with detokenize=False
    ({"stop": ["</answer>"]}, {"flat_logprobs": True, "stop": ["</answer>"]}),
    ({"stop": []}, {"detokenize": False, "flat_logprobs": True, "stop": []}),
])
def test_vllm_generation_kwargs(user, expected):
    assert engines.vllm_generation_kwargs(user) == expected


def test_colocated_vllm_gets_lean_outputs_under_the_users_kwargs(monkeypatch):
    # the process-group variables grpo_args sets for one process, set here so the test leaves none behind
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": "29999"}.items():
        monkeypatch.setenv(k, v)
    s = load_settings(overrides=['--train.extra={"generation_kwargs": {"ignore_eos": true}, "top_k": 20}'])
    engine = engines.TrlEngine()
    engine.cuda = engine.vllm = True  # as on a GPU machine with vLLM
    args = engine.grpo_args(s)
    assert args["use_vllm"] is True and args["vllm_mode"] == "colocate"
    assert args["generation_kwargs"] == {"detokenize": False, "flat_logprobs": True, "ignore_eos": True}
    # and train.py's merge keeps them: the engine's dict replaces the settings' own
    from grpo_job.training.train import grpo_config_kwargs

    kwargs = grpo_config_kwargs(s, Path("/tmp/unused"))
    assert kwargs["generation_kwargs"] == {"ignore_eos": True} and kwargs["top_k"] == 20
    kwargs.update(args)
    assert kwargs["generation_kwargs"]["detokenize"] is False and kwargs["top_k"] == 20
    # the server mode sends generation_kwargs over HTTP to `trl vllm-serve`: left as the user wrote them
    s = load_settings(overrides=["--distributed.vllm_mode=server"])
    assert "generation_kwargs" not in engine.grpo_args(s)


def test_model_max_positions_reads_the_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 8192}))
    assert engines.model_max_positions(str(tmp_path)) == 8192
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 4096}}))
    assert engines.model_max_positions(str(tmp_path)) == 4096
    assert engines.model_max_positions(str(tmp_path / "missing")) is None
    assert engines.model_max_positions("Qwen/Qwen2.5-0.5B-Instruct") is None  # a Hub id: not read


@pytest.mark.skipif(machine.has_cuda_gpu(), reason="the CPU rule")
@pytest.mark.parametrize("four_bit", ["true", "false"])
def test_auto_is_trl_without_a_gpu(four_bit):
    s = load_settings(overrides=["--model.engine=auto", f"--model.load_in_4bit={four_bit}"])
    assert engines.pick_engine(s) == "trl"


def test_the_default_base_model_is_16_bit():
    # the fast default on a GPU (trl + vLLM colocated); 4-bit is asked for, and then picks unsloth
    assert load_settings().model.load_in_4bit is False


def test_explicit_engine_is_kept():
    assert engines.pick_engine(load_settings(overrides=["--model.engine=unsloth"])) == "unsloth"
    assert engines.pick_engine(load_settings(overrides=["--model.engine=trl"])) == "trl"


_CPU_ENV = {"CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | _CPU_ENV
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)


def test_trl_cpu_kernels_run_after_the_checks_imported_trl():
    """`check` on `train.extra` imports TRL's GRPOConfig, which imports torch and Triton; TRL's log-prob
    kernel must still run on the CPU in that process (CI once failed here: Triton's library functions were
    built for a GPU because the interpreter flag came after Triton's first import)."""
    smoke = Path(__file__).resolve().parents[1] / "examples" / "smoke.yaml"
    code = (
        "from grpo_job import cli\n"
        f"assert cli.main(['check', '--config', {str(smoke)!r}, '--train.extra={{\"top_p\": 0.9}}']) == 0\n"
        "import sys; assert 'triton' in sys.modules  # the check imported it\n"
        "import torch\n"
        "from trl.kernels import ChunkedLogProbFunction as F\n"
        "h, w, t = torch.randn(3, 8), torch.randn(50, 8), torch.tensor([1, 2, 3])\n"
        "logps = F.apply(h, w, None, t, 1.0, 1024)[0]\n"
        "assert torch.allclose(logps, torch.log_softmax(h @ w.T, -1).gather(1, t[:, None])[:, 0], atol=1e-4)\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr[-3000:]


def test_triton_imported_before_the_flag_is_a_clear_error():
    done = _python("import triton\nfrom grpo_job import machine\nmachine.probe()")
    assert done.returncode != 0
    assert "Triton was imported before TRITON_INTERPRET=1" in done.stderr


GIB = 1024**3
QWEN05_KV = 2 * 24 * 2 * 64 * 2  # Qwen2.5-0.5B: 24 layers, 2 KV heads of 64, bf16 keys and values


@pytest.mark.parametrize(("overrides", "kw", "expected"), [
    # the default recipe on an H200: 4 optimizer steps of 64 per vLLM batch of 256
    ([], dict(vllm=True, train_prompts=7000, weight_bytes=1 * GIB, gpu_bytes=141 * GIB), 4),
    # micro-steps: 4 optimizer steps of 2 micro-steps each
    (["--train.per_device_train_batch_size=32", "--train.gradient_accumulation_steps=2"],
     dict(vllm=True, train_prompts=7000, weight_bytes=1 * GIB, gpu_bytes=141 * GIB), 8),
    # a small dataset: 8 prompts per step, 20 prompts in all -> 2 steps per generation (16 prompts)
    ([], dict(vllm=True, train_prompts=20, weight_bytes=1 * GIB, gpu_bytes=141 * GIB), 2),
    ([], dict(vllm=True, train_prompts=5, weight_bytes=1 * GIB, gpu_bytes=141 * GIB), 1),
    # 0.1 x 30 GiB less 1 GiB of weights and 1 of activations: 1 GiB of KV cache holds 2 batches of 64 x 640
    # tokens at 12 KiB per token (0.94 GiB) but not 3
    (["--model.gpu_memory_utilization=0.1"], dict(vllm=True, train_prompts=7000, weight_bytes=GIB, gpu_bytes=30 * GIB), 2),
    # the weights alone fill vLLM's share: one generation per step
    (["--model.gpu_memory_utilization=0.1"], dict(vllm=True, train_prompts=7000, weight_bytes=4 * GIB, gpu_bytes=40 * GIB), 1),
    # without vLLM (CPU): TRL's default, gradient_accumulation_steps
    ([], dict(vllm=False, train_prompts=7000), None),
    # set explicitly: as set, whatever the machine
    (["--train.steps_per_generation=3"], dict(vllm=True, train_prompts=7000, weight_bytes=GIB, gpu_bytes=141 * GIB), 3),
    # generation_batch_size is the other way to say it: auto leaves it to TRL
    (['--train.extra={"generation_batch_size": 128}'], dict(vllm=True, train_prompts=7000), None),
    # vLLM as a server: its memory is elsewhere, the prompt count alone limits
    (["--distributed.vllm_mode=server"], dict(vllm=True, train_prompts=7000), 4),
])
def test_steps_per_generation(overrides, kw, expected):
    s = load_settings(overrides=overrides)
    steps, why = engines.steps_per_generation(s, kv_bytes_per_token=QWEN05_KV, **kw)
    assert steps == expected, why
    assert why


def test_kv_cache_bytes_per_token_from_a_config():
    from types import SimpleNamespace

    qwen = SimpleNamespace(num_attention_heads=14, hidden_size=896, num_key_value_heads=2, num_hidden_layers=24)
    assert engines.kv_cache_bytes_per_token(qwen) == QWEN05_KV
    nested = SimpleNamespace(text_config=SimpleNamespace(num_attention_heads=8, hidden_size=512, head_dim=128,
                                                         num_hidden_layers=2))
    assert engines.kv_cache_bytes_per_token(nested) == 2 * 2 * 8 * 128 * 2  # no GQA: every head has KV


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_trainer_progress_bar_is_off_in_both_log_formats(log_format):
    """The job's step line (step/total, rewards, ETA) is the progress: in text mode the trainer's bar printed each
    step's metrics a second time and tangled with the log lines (trial T)."""
    from grpo_job.training.train import grpo_config_kwargs

    s = load_settings(Path(__file__).resolve().parents[1] / "examples" / "smoke.yaml", [f"--log_format={log_format}"])
    assert grpo_config_kwargs(s, Path("/tmp/unused"))["disable_tqdm"] is True
