"""Checkpoint publishing, pruning and restoring against the local store."""

import json

from grpo_job.store import LocalStore, checkpoints


def fake_trainer_checkpoint(root, step, payload=b"weights"):
    d = root / f"checkpoint-{step}"
    (d / "sub").mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes(payload * 100)
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (d / "sub" / "rng_state.pth").write_bytes(b"rng")
    return d


def test_publish_restore_roundtrip(tmp_path):
    store = LocalStore(tmp_path / "store")
    src = fake_trainer_checkpoint(tmp_path / "out", 2)
    manifest = checkpoints.publish(store, src, 2, keep_last=2)
    assert set(manifest["files"]) == {"adapter_model.safetensors", "trainer_state.json", "sub/rng_state.pth"}
    assert checkpoints.complete_steps(store) == [2]
    restored = checkpoints.restore_latest(store, tmp_path / "restore")
    assert restored.name == "checkpoint-2"
    assert (restored / "sub" / "rng_state.pth").read_bytes() == b"rng"


def test_checkpoint_without_manifest_does_not_count(tmp_path):
    store = LocalStore(tmp_path / "store")
    checkpoints.publish(store, fake_trainer_checkpoint(tmp_path / "out", 2), 2, keep_last=2)
    # an interrupted upload of step 4: files but no manifest
    store.put_file(fake_trainer_checkpoint(tmp_path / "out", 4) / "trainer_state.json", "checkpoints/checkpoint-4/trainer_state.json")
    assert checkpoints.steps_in_store(store) == [2, 4]
    assert checkpoints.complete_steps(store) == [2]
    assert checkpoints.restore_latest(store, tmp_path / "r").name == "checkpoint-2"


def test_corrupt_checkpoint_skipped_for_previous(tmp_path):
    store = LocalStore(tmp_path / "store")
    checkpoints.publish(store, fake_trainer_checkpoint(tmp_path / "out", 2), 2, keep_last=3)
    checkpoints.publish(store, fake_trainer_checkpoint(tmp_path / "out", 4, b"newer!!"), 4, keep_last=3)
    # same size, different bytes: only the checksum can tell
    path = store.root / "checkpoints/checkpoint-4/adapter_model.safetensors"
    path.write_bytes(b"x" * path.stat().st_size)
    assert checkpoints.restore_latest(store, tmp_path / "r").name == "checkpoint-2"


def test_prune_keeps_last_complete(tmp_path):
    store = LocalStore(tmp_path / "store")
    for step in (1, 2, 3, 4):
        checkpoints.publish(store, fake_trainer_checkpoint(tmp_path / f"out{step}", step), step, keep_last=2)
    assert checkpoints.complete_steps(store) == [3, 4]
    assert checkpoints.steps_in_store(store) == [3, 4]
