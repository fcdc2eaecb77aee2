"""The S3 store against a real S3 endpoint on loopback (moto's server, boto3 over HTTP), behind a
proxy that drops connections, throttles with 503 SlowDown and adds delay."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grpo_job.errors import EXIT_FAILURE, EXIT_INVALID, SettingsError
from grpo_job.store import checkpoints, open_store
from grpo_job.store.s3 import S3Store, download_object, object_size
from tests.job_env import job_env

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


def fake_checkpoint(root: Path, step: int, big_mib: int = 20) -> Path:
    """A trainer-like checkpoint folder; the big file goes up as a multipart upload (16 MiB parts)."""
    d = root / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "optimizer.pt").write_bytes(os.urandom(big_mib * MiB))
    (d / "adapter_model.safetensors").write_bytes(os.urandom(MiB))
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return d


def part_put(req) -> bool:
    """A request carrying checkpoint bytes: an UploadPart or a PUT of a file (not the manifest)."""
    return req.method == "PUT" and "/checkpoints/" in req.path and "manifest.json" not in req.path and req.body_len > 0


def manifest_puts(seen) -> list[int]:
    return [i for i, r in enumerate(seen) if r.method == "PUT" and r.path.split("?")[0].endswith("/manifest.json")]


def test_store_interface_roundtrip(s3, tmp_path):
    store = open_store(f"s3://{s3.bucket}/runs", "r1")
    assert isinstance(store, S3Store) and store.endpoint == s3.proxy.url
    store.check_reachable()
    store.write_text("stages/train.json", '{"ok": 1}')
    assert store.exists("stages/train.json") and not store.exists("stages/merge.json")
    assert json.loads(store.read_text("stages/train.json")) == {"ok": 1}
    src = fake_checkpoint(tmp_path, 1)
    keys = store.put_dir(src, "checkpoints/checkpoint-1")
    store.put_dir(fake_checkpoint(tmp_path, 10, big_mib=1), "checkpoints/checkpoint-10")
    assert "checkpoints/checkpoint-1/optimizer.pt" in keys
    assert store.size("checkpoints/checkpoint-1/optimizer.pt") == 20 * MiB
    assert any("uploadId=" in r.path for r in s3.proxy.seen), "a 20 MiB file goes up in parts"
    # deleting checkpoint-1 must not take checkpoint-10 with it
    store.delete_prefix("checkpoints/checkpoint-1")
    assert store.list("checkpoints/") == [f"checkpoints/checkpoint-10/{n}" for n in
                                          ("adapter_model.safetensors", "optimizer.pt", "trainer_state.json")]
    assert s3.keys("runs/r1/")[0].startswith("runs/r1/checkpoints/checkpoint-10/")
    got = store.get_dir("checkpoints/checkpoint-10", tmp_path / "dl")
    assert sorted(p.name for p in got) == ["adapter_model.safetensors", "optimizer.pt", "trainer_state.json"]
    assert (tmp_path / "dl/optimizer.pt").read_bytes() == (tmp_path / "checkpoint-10/optimizer.pt").read_bytes()


def test_publish_and_restore_with_checksums(s3, tmp_path):
    store = S3Store(f"s3://{s3.bucket}/runs/r2")
    checkpoints.publish(store, fake_checkpoint(tmp_path / "a", 2, big_mib=1), 2, keep_last=2)
    checkpoints.publish(store, fake_checkpoint(tmp_path / "b", 4, big_mib=1), 4, keep_last=2)
    assert checkpoints.complete_steps(store) == [2, 4]
    # same size, other bytes: only the sha256 in the manifest can tell
    s3.direct.put_object(Bucket=s3.bucket, Key="runs/r2/checkpoints/checkpoint-4/optimizer.pt", Body=b"x" * MiB)
    restored = checkpoints.restore_latest(store, tmp_path / "restore")
    assert restored.name == "checkpoint-2"
    assert (restored / "optimizer.pt").read_bytes() == (tmp_path / "a/checkpoint-2/optimizer.pt").read_bytes()


def test_transient_faults_are_ridden_through(s3, tmp_path):
    """Throttling, delay and dropped connections below botocore's retry budget: one attempt succeeds."""
    s3.proxy.add("slowdown", lambda r: r.method in ("PUT", "POST"), times=3)
    s3.proxy.add("drop", part_put, times=2)
    s3.proxy.add("delay", seconds=0.05)
    store = S3Store(f"s3://{s3.bucket}/runs/r3")
    src = fake_checkpoint(tmp_path, 6)
    manifest = checkpoints.publish(store, src, 6, keep_last=2)
    outcomes = [r.outcome for r in s3.proxy.seen]
    assert outcomes.count("slowdown") == 3 and outcomes.count("dropped") == 2
    assert len(manifest_puts(s3.proxy.seen)) == 1
    restored = checkpoints.restore_latest(store, tmp_path / "restore")
    assert restored.name == "checkpoint-6"
    assert checkpoints.build_manifest(restored, 6) == manifest


def test_dropped_upload_writes_no_manifest_and_the_retry_completes(s3, tmp_path):
    """The first upload of the checkpoint fails for good (every retry of one part is dropped): no
    manifest is written for it; the publisher uploads the checkpoint again and that completes."""
    store = S3Store(f"s3://{s3.bucket}/runs/r4", max_attempts=2)
    big_parts = lambda r: part_put(r) and "uploadId=" in r.path and "partNumber=2" in r.path  # noqa: E731
    s3.proxy.add("drop", big_parts, times=2)  # both tries botocore makes with max_attempts=2
    publisher = checkpoints.BackgroundPublisher(store, keep_last=2, staging_dir=tmp_path / "staging")
    src = fake_checkpoint(tmp_path / "out", 8)
    publisher.submit(src, 8)
    assert publisher.close(timeout=120)
    seen = s3.proxy.seen
    drops = [i for i, r in enumerate(seen) if r.outcome == "dropped"]
    manifests = manifest_puts(seen)
    assert len(drops) == 2, [(r.method, r.path, r.outcome) for r in seen]
    # exactly one manifest, written after the failed attempt and after every byte of the retry
    assert len(manifests) == 1 and manifests[0] > drops[-1]
    last_part = max(i for i, r in enumerate(seen) if part_put(r) and r.outcome == "200")
    assert manifests[0] > last_part
    completes = [i for i, r in enumerate(seen) if r.method == "POST" and "uploadId=" in r.path]
    assert completes and manifests[0] > completes[-1]
    assert publisher.published == [8] and checkpoints.complete_steps(store) == [8]
    assert checkpoints.restore_latest(store, tmp_path / "restore").name == "checkpoint-8"


def test_upload_that_keeps_failing_fails_loudly_without_manifest(s3, tmp_path):
    store = S3Store(f"s3://{s3.bucket}/runs/r5", max_attempts=2)
    s3.proxy.add("drop", lambda r: part_put(r) and "optimizer.pt" in r.path)
    publisher = checkpoints.BackgroundPublisher(store, keep_last=2, staging_dir=tmp_path / "staging")
    publisher.submit(fake_checkpoint(tmp_path / "out", 2, big_mib=1), 2)
    with pytest.raises(checkpoints.UploadFailed, match="checkpoint-2 failed to upload 2 times"):
        publisher.wait(timeout=120)
    with pytest.raises(checkpoints.UploadFailed):  # and every later step is told too
        publisher.submit(fake_checkpoint(tmp_path / "out", 3, big_mib=1), 3)
    assert not [k for k in s3.keys("runs/r5/") if k.endswith("manifest.json")]
    assert checkpoints.complete_steps(store) == []
    publisher._queue.put(None)  # let the worker thread end


def test_background_upload_reads_a_snapshot_the_trainer_cannot_delete(s3, tmp_path):
    """submit() returns while the upload is still running (slowed by the proxy), and the trainer
    deleting its checkpoint folder (save_total_limit) does not hurt the upload."""
    import shutil

    s3.proxy.add("delay", seconds=0.3)
    store = S3Store(f"s3://{s3.bucket}/runs/r6")
    publisher = checkpoints.BackgroundPublisher(store, keep_last=2, staging_dir=tmp_path / "staging")
    src = fake_checkpoint(tmp_path / "out", 5, big_mib=1)
    expected = checkpoints.build_manifest(src, 5)
    t0 = time.monotonic()
    publisher.submit(src, 5)
    assert publisher.pending == 1  # returned before the upload finished
    shutil.rmtree(src)
    assert publisher.close(timeout=120) and time.monotonic() - t0 > 0.3
    assert checkpoints.restore_latest(store, tmp_path / "restore").name == "checkpoint-5"
    assert checkpoints.build_manifest(tmp_path / "restore/checkpoint-5", 5) == expected
    assert not (tmp_path / "staging/checkpoint-5").exists()


def test_data_object_errors_are_clear(s3, tmp_path):
    s3.direct.put_object(Bucket=s3.bucket, Key="data/train.jsonl", Body=b'{"question": "q", "answer": "#### 1"}\n')
    assert object_size(f"s3://{s3.bucket}/data/train.jsonl") > 0
    download_object(f"s3://{s3.bucket}/data/train.jsonl", tmp_path / "d/train.jsonl")
    assert (tmp_path / "d/train.jsonl").read_text().startswith('{"question"')
    with pytest.raises(SettingsError, match="does not exist.*GRPO_DATA__PATH"):
        object_size(f"s3://{s3.bucket}/data/nope.jsonl")
    with pytest.raises(SettingsError, match="bucket .* does not exist"):
        object_size("s3://no-such-bucket-xyz/data/train.jsonl")


def test_data_files_of_the_same_name_from_two_buckets_stay_apart(s3, tmp_path):
    """A cache shared by runs (`cache_dir`) holds each S3 data file under its own URI: the second run's
    `train.jsonl` must not be the first one's."""
    from grpo_job.data import sources
    from grpo_job.settings import DataSettings

    for prefix, answer in (("a", "1"), ("b", "2")):
        body = f'{{"question": "q", "answer": "#### {answer}"}}\n'.encode()
        s3.direct.put_object(Bucket=s3.bucket, Key=f"{prefix}/train.jsonl", Body=body)
    files = [sources.local_data_file(DataSettings(path=f"s3://{s3.bucket}/{p}/train.jsonl"), tmp_path / "cache")
             for p in ("a", "b")]
    assert files[0] != files[1] and files[0].name == files[1].name == "train.jsonl"
    assert [json.loads(f.read_text())["answer"] for f in files] == ["#### 1", "#### 2"]
    assert not list((tmp_path / "cache").rglob("*.partial"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _check(tmp_path, env_extra, *args):
    env = job_env(tmp_path, **env_extra)
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "check", "--config", str(ROOT / "examples/smoke.yaml"),
           "--log_format=text", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def test_check_says_when_the_store_is_unreachable_or_refuses(s3, tmp_path):
    """Unreachable: exit 1, which the Job retries (trial: exit 2 failed a Job for good on a store outage while its
    replacement pod started); a store that answers no (no such bucket): exit 2."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    env = {**s3.env, "AWS_ENDPOINT_URL_S3": endpoint}
    t0 = time.monotonic()
    r = _check(tmp_path, env, f"--store.uri=s3://{s3.bucket}/runs")
    assert r.returncode == EXIT_FAILURE and "a retry may find it answering" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert "cannot reach the S3 endpoint" in r.stderr and endpoint in r.stderr and s3.bucket in r.stderr
    assert "AWS_ENDPOINT_URL_S3" in r.stderr
    assert time.monotonic() - t0 < 60  # few retries for `check`, not minutes of back-off

    r = _check(tmp_path, s3.env, "--store.uri=s3://no-such-bucket-xyz/runs")
    assert r.returncode == EXIT_INVALID and "does not exist" in r.stderr, r.stderr

    r = _check(tmp_path, s3.env, f"--store.uri=s3://{s3.bucket}/runs")
    assert r.returncode == 0, r.stderr
    assert f"s3://{s3.bucket}/runs/smoke" in r.stdout


def test_an_upload_that_hangs_is_warned_of_once_and_named_as_unsaved(s3, tmp_path, caplog):
    """Trial: a frozen S3 endpoint; training ran on 6 minutes with checkpoints queued and nothing said."""
    s3.proxy.add("delay", seconds=0.3)
    store = S3Store(f"s3://{s3.bucket}/runs/r9")
    publisher = checkpoints.BackgroundPublisher(store, keep_last=2, staging_dir=tmp_path / "staging", stall_seconds=0.2)
    publisher.submit(fake_checkpoint(tmp_path / "out", 5, big_mib=1), 5)
    assert publisher.unsaved() == [5]
    publisher.raise_if_failed()  # too early to say anything
    time.sleep(0.3)
    with caplog.at_level("WARNING", logger="grpo_job.store.checkpoints"):
        publisher.raise_if_failed()
        publisher.raise_if_failed()  # once per stalled checkpoint, not once per step
    said = [r.getMessage() for r in caplog.records if "waited" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("checkpoint-5 has waited") and store.uri in said[0], said
    assert "a stop or a lost pod resumes from an older checkpoint" in said[0]
    publisher.submit(fake_checkpoint(tmp_path / "out", 6, big_mib=1), 6)
    with caplog.at_level("INFO", logger="grpo_job.store.checkpoints"):  # the end of training waits, and says so
        assert publisher.close(timeout=120) and publisher.unsaved() == []
    assert any(r.getMessage().startswith("waiting for the upload of checkpoint(s)") and "6 to s3://" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
