"""Stages: order, done-markers in the store, skipping finished stages, re-running failed ones."""

import json

import pytest

from grpo_job import pipeline
from grpo_job.settings import load_settings
from grpo_job.stages import Stage
from grpo_job.stages import stages as all_stages
from grpo_job.store import LocalStore


@pytest.fixture
def settings(tmp_path):
    return load_settings(overrides=[f"--store.uri={tmp_path / 'runs'}", "--run_id=t1", f"--work_dir={tmp_path / 'work'}",
                                    "--data.path=builtin:arithmetic"])


def test_stages_run_in_order_then_skip(settings, tmp_path):
    calls = []

    def make(name):
        def body(ctx):
            calls.append(name)
            return {"did": name}
        return Stage(name, body)

    stages = [make("a"), make("b"), Stage("off", lambda c: calls.append("off"), enabled=lambda s: False)]
    first = pipeline.run(settings, stages)
    assert calls == ["a", "b"] and first["b"]["did"] == "b"
    store = LocalStore(tmp_path / "runs" / "t1")
    assert json.loads(store.read_text("stages/a.json"))["did"] == "a"
    assert json.loads(store.read_text("settings.json"))["fingerprint"] == settings.fingerprint()
    calls.clear()
    second = pipeline.run(settings, stages)
    assert calls == [] and second["a"]["did"] == "a"


def test_failed_stage_leaves_no_marker_and_reruns(settings, tmp_path):
    state = {"fail": True}

    def flaky(ctx):
        if state["fail"]:
            raise RuntimeError("boom")
        return {}

    stages = [Stage("ok", lambda c: {}), Stage("flaky", flaky)]
    with pytest.raises(RuntimeError):
        pipeline.run(settings, stages)
    store = LocalStore(tmp_path / "runs" / "t1")
    assert store.exists("stages/ok.json") and not store.exists("stages/flaky.json")
    state["fail"] = False
    pipeline.run(settings, stages)
    assert store.exists("stages/flaky.json")


@pytest.mark.parametrize("damaged", ["settings.json", "stages/a.json"])
def test_a_damaged_store_file_is_exit_2_naming_it_and_deleting_it_recovers(settings, tmp_path, damaged):
    """A marker or settings.json cut short or edited by hand (new-user trial: a traceback and exit 1, which
    Kubernetes retries for nothing) is a SettingsError naming the file; deleting it redoes what it recorded."""
    from grpo_job.errors import SettingsError

    calls = []
    stages = [Stage("a", lambda c: calls.append("a") or {}), Stage("b", lambda c: calls.append("b") or {})]
    pipeline.run(settings, stages)
    store = LocalStore(tmp_path / "runs" / "t1")
    store.write_text(damaged, '{"fingerprint": "ab')
    with pytest.raises(SettingsError, match=f"t1/{damaged} in the run's store is not valid JSON.*Delete it"):
        pipeline.run(settings, stages)
    (tmp_path / "runs" / "t1" / damaged).unlink()
    calls.clear()
    pipeline.run(settings, stages)
    assert calls == (["a"] if damaged.startswith("stages/") else [])


def test_store_files_are_readable_as_the_umask_says(settings, tmp_path):
    """Markers and settings were written 0600 (mkstemp) beside 0644 checkpoint files (new-user trial)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        pipeline.run(settings, [Stage("a", lambda c: {})])
    finally:
        os.umask(old)
    for name in ("settings.json", "stages/a.json"):
        assert stat.S_IMODE((tmp_path / "runs" / "t1" / name).stat().st_mode) == 0o644, name


def test_prepare_data_stage_writes_prompts_to_store(settings, tmp_path, chat_models):
    # prepare_data checks the prompts against the model's tokenizer: a local one (the default model is on the Hub)
    settings = settings.model_copy(update={"model": settings.model.model_copy(
        update={"name_or_path": str(chat_models["smollm2"])})})
    pipeline.run(settings, [s for s in all_stages() if s.name == "prepare_data"])
    store = LocalStore(tmp_path / "runs" / "t1")
    rows = [json.loads(line) for line in store.read_text("data/train.jsonl").splitlines()]
    assert len(rows) == 256 and rows[0]["prompt"][1]["role"] == "user"
