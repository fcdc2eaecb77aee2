"""Engine choice and the vLLM settings the job derives (no GPU needed: pure functions of the settings)."""

import json

import pytest

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


def test_model_max_positions_reads_the_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 8192}))
    assert engines.model_max_positions(str(tmp_path)) == 8192
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 4096}}))
    assert engines.model_max_positions(str(tmp_path)) == 4096
    assert engines.model_max_positions(str(tmp_path / "missing")) is None
    assert engines.model_max_positions("Qwen/Qwen2.5-0.5B-Instruct") is None  # a Hub id: not read


@pytest.mark.skipif(engines.has_cuda_gpu(), reason="the CPU rule")
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
