"""Settings: sources and their precedence, validation messages, shipped examples, secrets."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_job.errors import EXIT_INVALID, SettingsError
from grpo_job.settings import JobSettings, load_settings, parse_overrides

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith("GRPO_") or k == "HF_TOKEN":
            monkeypatch.delenv(k)


def test_defaults_reproduce_the_recipe():
    s = JobSettings()
    assert s.model.name_or_path == "Qwen/Qwen2.5-3B-Instruct" and not s.model.load_in_4bit
    assert s.model.gpu_memory_utilization == 0.6
    assert s.data.path == "openai/gsm8k" and s.data.task == "gsm8k"
    assert s.rewards == {"format": 0.5, "correctness": 2.0}
    assert s.lora.r == 32 and set(s.lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    t = s.train
    assert (t.learning_rate, t.lr_scheduler_type, t.warmup_steps, t.optim) == (5e-6, "cosine", 0.1, "adamw_8bit")
    assert (t.num_generations, t.max_completion_length, t.save_steps) == (8, 512, 100)
    assert s.warnings() == []


def test_precedence_cli_over_env_over_yaml(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  max_steps: 10\n  save_steps: 5\n  learning_rate: 2.0e-6\nmodel:\n  engine: trl\n")
    s = load_settings(cfg)
    assert (s.train.max_steps, s.train.save_steps, s.model.engine) == (10, 5, "trl")
    monkeypatch.setenv("GRPO_TRAIN__MAX_STEPS", "20")
    monkeypatch.setenv("GRPO_CONFIG", str(cfg))
    s = load_settings()
    assert (s.train.max_steps, s.train.save_steps, s.train.learning_rate) == (20, 5, 2e-6)  # env beats YAML, rest kept
    s = load_settings(cfg, ["--train.max_steps=30", "--model.engine", "unsloth"])
    assert (s.train.max_steps, s.train.save_steps, s.model.engine) == (30, 5, "unsloth")  # CLI beats env


def test_env_nesting_lists_and_dicts(monkeypatch):
    monkeypatch.setenv("GRPO_LORA__TARGET_MODULES", '["q_proj","v_proj"]')
    monkeypatch.setenv("GRPO_REWARDS", '{"partial_format": 1.0, "correctness": 2.0}')
    monkeypatch.setenv("GRPO_STORE__URI", "s3://my-bucket/runs")
    monkeypatch.setenv("GRPO_RUN_ID", "exp-1")
    s = load_settings()
    assert s.lora.target_modules == ["q_proj", "v_proj"]
    assert s.rewards == {"partial_format": 1.0, "correctness": 2.0}
    assert s.store.uri == "s3://my-bucket/runs" and s.resolved_run_id() == "exp-1"


def test_every_bad_field_reported_at_once(monkeypatch):
    monkeypatch.setenv("GRPO_TRAIN__MAX_STEPS", "-1")
    monkeypatch.setenv("GRPO_MODEL__ENGINE", "nope")
    monkeypatch.setenv("GRPO_TRAIN__NUM_GENERATIONS", "1")
    monkeypatch.setenv("GRPO_STORE__URI", "s3://")
    monkeypatch.setenv("GRPO_REWARDS", '{"not_a_module_xyz:fn": 1.0}')
    with pytest.raises(SettingsError) as e:
        load_settings()
    msg = str(e.value)
    for var in ("GRPO_TRAIN__MAX_STEPS", "GRPO_MODEL__ENGINE", "GRPO_TRAIN__NUM_GENERATIONS", "GRPO_STORE__URI", "GRPO_REWARDS"):
        assert var in msg, var
    assert "5 problems" in msg and "no bucket" in msg and "not_a_module_xyz" in msg


def test_cross_field_rules_mirror_trl():
    with pytest.raises(SettingsError, match="must be divisible by num_generations"):
        load_settings(overrides=["--train.per_device_train_batch_size=6", "--train.num_generations=4"])
    load_settings(overrides=["--train.per_device_train_batch_size=4", "--train.gradient_accumulation_steps=2",
                             "--train.num_generations=8"])
    with pytest.raises(SettingsError, match="exceeds model.max_seq_length"):
        load_settings(overrides=["--model.max_seq_length=512", "--train.max_completion_length=512"])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("--hub.repo_id=not a repo", "not a Hub repo id"),
        ("--store.uri=s3://Bad_Bucket/x", "not a valid S3 bucket name"),
        ("--store.uri=gs://bucket", "unsupported store scheme"),
        ("--data.path=/no/such/file.jsonl", "does not exist"),
        ("--data.path=builtin:nope", "unknown built-in dataset"),
        ("--train.learning_rate=0", "greater than 0"),
        ("--train.max_step=5", "Extra inputs are not permitted"),  # typo
    ],
)
def test_bad_values_say_what_is_wrong(override, fragment):
    with pytest.raises(SettingsError, match=fragment):
        load_settings(overrides=[override])


def test_known_traps_warn_but_pass():
    s = load_settings(overrides=["--train.learning_rate=1e-4", "--train.num_generations=2",
                                 "--train.per_device_train_batch_size=2", "--model.gpu_memory_utilization=0.95"])
    text = " ".join(s.warnings())
    assert "SFT-sized" in text and "small group" in text and "out-of-memory" in text


def test_secret_never_dumped(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_supersecretvalue123")
    s = load_settings()
    assert s.hf_token.get_secret_value() == "hf_supersecretvalue123"
    assert "supersecret" not in json.dumps(s.redacted()) and "supersecret" not in repr(s)


def test_overrides_parse():
    assert parse_overrides(["--a.b=1", "--a.c", "[x, y]", "--d=true"]) == {"a": {"b": 1, "c": ["x", "y"]}, "d": True}
    with pytest.raises(SettingsError):
        parse_overrides(["positional"])


def test_run_id_is_stable_and_tracks_settings():
    a, b = load_settings(), load_settings()
    assert a.resolved_run_id() == b.resolved_run_id()
    assert load_settings(overrides=["--train.max_steps=7"]).resolved_run_id() != a.resolved_run_id()
    assert load_settings(overrides=["--store.uri=/tmp/elsewhere"]).resolved_run_id() == a.resolved_run_id()


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_examples_parse(example):
    load_settings(example)


def test_check_cli_exits_2_with_every_bad_field_and_no_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "GRPO_TRAIN__MAX_STEPS": "-1", "GRPO_MODEL__ENGINE": "nope",
           "GRPO_TRAIN__NUM_GENERATIONS": "1", "GRPO_STORE__URI": "s3://", "GRPO_REWARDS": '{"nomod_abc:f": 1}'}
    r = subprocess.run([sys.executable, str(ROOT / "entrypoint.py"), "check"], env=env, capture_output=True,
                       text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == EXIT_INVALID
    assert "Traceback" not in r.stderr
    for var in ("GRPO_TRAIN__MAX_STEPS", "GRPO_MODEL__ENGINE", "GRPO_TRAIN__NUM_GENERATIONS", "GRPO_STORE__URI", "GRPO_REWARDS"):
        assert var in r.stderr


def test_check_imports_no_ml_library(tmp_path):
    code = (
        "import sys; from grpo_job.cli import main; rc = main(['check', '--config', {!r}]); "
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets', 'unsloth', 'vllm') if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(rc)"
    ).format(str(ROOT / "examples" / "smoke.yaml"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "GRPO_STORE__URI": str(tmp_path / "runs")})
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout
