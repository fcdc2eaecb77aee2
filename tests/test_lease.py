"""The run's lease (grpo_job/store/lease.py): one process at a time per run, on a local store and on S3
(moto's server on loopback), with real second processes."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from grpo_job import pipeline
from grpo_job.errors import SettingsError
from grpo_job.settings import load_settings
from grpo_job.stages import Stage
from grpo_job.store import LocalStore, open_store
from grpo_job.store.lease import KEY, RunInUse, acquire, holder_identity

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "runs" / "r1")
    s3 = request.getfixturevalue("s3")
    return open_store(f"s3://{s3.bucket}/runs", "r1")


def holder_process(store_uri: str, seconds: float, release_after: float | None = None) -> subprocess.Popen:
    """A second process that takes the lease of run r1 and renews it; prints `held` once it holds it.
    With `release_after` it releases the lease then; without, it runs until killed."""
    code = textwrap.dedent(f"""
        import time
        from grpo_job.store import open_store
        from grpo_job.store.lease import acquire
        held = acquire(open_store({store_uri!r}, "r1"), {seconds})
        held.start_renewing()
        print("held", flush=True)
        time.sleep({release_after if release_after is not None else 3600})
        held.release()
        print("released", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def store_uri(store) -> str:
    return str(store.root.parent) if isinstance(store, LocalStore) else store.uri.rsplit("/", 1)[0]


def test_write_if_is_a_compare_and_swap(store):
    assert store.read_tagged("x.json") is None
    first = store.write_if("x.json", b"1", None)
    assert first is not None
    assert store.write_if("x.json", b"2", None) is None  # exists now
    assert store.write_if("x.json", b"2", "not-its-tag") is None
    second = store.write_if("x.json", b"2", first)
    assert second not in (None, first)
    assert store.read_tagged("x.json")[:2] == (b"2", second)
    assert store.write_if("x.json", b"3", first) is None  # the old tag no longer matches
    assert store.read_bytes("x.json") == b"2"
    assert store.list() == ["x.json"]  # a local store's lock file is hidden


def test_of_many_writers_at_once_exactly_one_creates(store):
    results, go = [], threading.Barrier(8)

    def write(i):
        go.wait()
        results.append((i, store.write_if("race.json", str(i).encode(), None)))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, tag in results if tag is not None]
    assert len(winners) == 1
    assert store.read_bytes("race.json") == str(winners[0]).encode()


def test_a_second_process_stops_while_the_holder_renews(store):
    proc = holder_process(store_uri(store), seconds=1.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(RunInUse) as e:
            acquire(store, 1.0)
        assert time.monotonic() - t0 < 3
        msg = str(e.value)
        assert f"process {proc.pid} on host" in msg and "GRPO_RUN_ID" in msg and "is in use" in msg
    finally:
        proc.kill()
        proc.wait()


def test_a_released_lease_is_taken_at_once_and_the_holder_itself_takes_it_back(store):
    proc = holder_process(store_uri(store), seconds=60.0, release_after=0.2)
    assert proc.stdout.readline().strip() == "released"
    proc.wait()
    t0 = time.monotonic()
    mine = acquire(store, 60.0)
    again = acquire(store, 60.0)  # the same process after the re-exec that follows `train`
    assert time.monotonic() - t0 < 5
    assert json.loads(store.read_bytes(KEY))["holder"] == holder_identity()
    again.release()
    assert json.loads(store.read_bytes(KEY))["released"] is True
    mine.release()  # its tag is stale now: logged, nothing raised, nothing overwritten
    assert json.loads(store.read_bytes(KEY))["holder"] == holder_identity()


def test_a_lease_left_by_a_process_of_this_machine_that_died_is_taken_at_once(store):
    proc = holder_process(store_uri(store), seconds=600.0)
    proc.kill()  # SIGKILL: nothing released
    proc.wait()
    left = json.loads(store.read_bytes(KEY))
    assert left["holder"]["pid"] == proc.pid and left["released"] is False
    t0 = time.monotonic()
    acquire(store, 600.0).release()
    assert time.monotonic() - t0 < 5


def test_a_lease_not_renewed_for_its_seconds_is_taken_over(store, caplog):
    gone = {"host": "node-that-lost-contact", "pid_namespace": "pid:[1]", "pid": 1, "started": 5}
    store.write_if(KEY, json.dumps({"holder": gone, "beat": 7, "released": False}).encode(), None)
    t0 = time.monotonic()
    held = acquire(store, 0.6)
    waited = time.monotonic() - t0
    assert 0.6 <= waited < 4
    lease = json.loads(store.read_bytes(KEY))
    assert lease["holder"] == holder_identity() and lease["beat"] == 8
    assert "took over" in caplog.text and "node-that-lost-contact" in caplog.text and "no renewal for" in caplog.text
    held.release()


def test_the_window_counts_from_the_lease_s_last_write_by_the_store_s_clock(store, caplog):
    """A replacement pod that starts a minute after its predecessor was SIGKILLed waited a whole lease_seconds more
    (counted from when it first saw the lease), 2 minutes in all (operator trial); the lease's age is read from
    the store itself (S3: the server's Date less LastModified; a local store: the file's mtime)."""
    gone = {"host": "node-b", "pid_namespace": "pid:[1]", "pid": 1, "started": 5}
    store.write_if(KEY, json.dumps({"holder": gone, "beat": 3, "released": False}).encode(), None)
    if isinstance(store, LocalStore):
        assert store.read_tagged(KEY).age < 5
        long_ago = time.time() - 600
        os.utime(store.root / KEY, (long_ago, long_ago))
        assert store.read_tagged(KEY).age >= 599
        window, expected = 60.0, 5.0  # 600 s old: taken over at once
    else:
        time.sleep(4)  # S3's timestamps are whole seconds: the age read is at least 2 s
        assert 2 <= store.read_tagged(KEY).age <= 5
        window, expected = 3.0, 2.5  # at most 1 s of the 3 left to wait (3 s from first sight before)
    t0 = time.monotonic()
    acquire(store, window).release()
    assert time.monotonic() - t0 < expected
    assert "no renewal for" in caplog.text and "node-b" in caplog.text


@pytest.mark.parametrize("body", [
    b"", b"{not json", b"[1, 2]", b'{"holder": ["x"], "beat": 1, "released": false}',
    b'{"holder": {"host": "h", "pid": 1}, "beat": "abc", "released": false}',
    b'{"holder": {"host": "h", "pid": 1}, "beat": null, "released": false}',
    b'{"holder": {"host": "h", "pid": 1}, "beat": 1, "released": "false"}',
    b'{"holder": {"host": "h", "pid": "x"}, "beat": 1, "released": false}',
])
def test_a_lease_this_job_did_not_write_is_taken_over_with_a_warning(store, body, caplog):
    """Cut short or edited by hand: no holder can be read from it, so none is honoured (new-user trial: these
    raised ValueError, TypeError, AttributeError; a string "false" counted as released)."""
    store.write_bytes(KEY, body)
    t0 = time.monotonic()
    acquire(store, 60.0).release()
    assert time.monotonic() - t0 < 5
    assert "it is not a lease this job wrote" in caplog.text


def test_a_lease_shorter_than_a_store_round_trip_is_refused():
    with pytest.raises(SettingsError, match="store.lease_seconds.*set at least 5, or 0"):
        load_settings(overrides=["--store.lease_seconds=0.5"])
    assert load_settings(overrides=["--store.lease_seconds=0"]).store.lease_seconds == 0


def test_a_holder_with_a_longer_lease_is_watched_for_its_own_seconds(store):
    """It renews every quarter of its own lease_seconds: watching for a shorter one would take a live run over."""
    other = {"host": "node-b", "pid_namespace": "pid:[1]", "pid": 1, "started": 5}
    store.write_if(KEY, json.dumps({"holder": other, "beat": 1, "released": False, "seconds": 1.5}).encode(), None)
    t0 = time.monotonic()
    acquire(store, 0.5).release()
    assert 1.5 <= time.monotonic() - t0 < 5


def test_a_holder_whose_lease_was_taken_over_stops_renewing(store):
    lost = []
    held = acquire(store, 0.4, on_lost=lost.append)
    tag = store.read_tagged(KEY).tag
    other = {"host": "elsewhere", "pid": 2}
    assert store.write_if(KEY, json.dumps({"holder": other, "beat": 99, "released": False}).encode(), tag) is not None
    held.start_renewing()
    deadline = time.monotonic() + 5
    while not lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lost and "took this run over" in lost[0] and "store.lease_seconds" in lost[0]
    held.release()
    assert json.loads(store.read_bytes(KEY))["holder"] == other  # the new holder's lease is left alone


def test_a_holder_that_is_taken_over_leaves_at_once_with_exit_1(tmp_path):
    code = textwrap.dedent(f"""
        import json, time
        from grpo_job.store import LocalStore
        from grpo_job.store.lease import KEY, acquire
        store = LocalStore({str(tmp_path / 'runs' / 'r1')!r})
        held = acquire(store, 0.4)
        tag = store.read_tagged(KEY).tag
        store.write_if(KEY, json.dumps({{"holder": {{"host": "elsewhere"}}}}).encode(), tag)
        held.start_renewing()
        time.sleep(10)
        print("still running", flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out
    assert "still running" not in out.stdout and "took this run over" in out.stderr


def test_the_pipeline_takes_the_lease_before_writing_and_releases_it(tmp_path):
    settings = load_settings(overrides=[f"--store.uri={tmp_path / 'runs'}", "--run_id=r1",
                                        f"--work_dir={tmp_path / 'work'}", "--data.path=builtin:arithmetic",
                                        "--store.lease_seconds=5"])
    store = LocalStore(tmp_path / "runs" / "r1")
    ran = []
    stages = [Stage("a", lambda ctx: ran.append(json.loads(store.read_bytes(KEY))["released"]) or {})]
    proc = holder_process(str(tmp_path / "runs"), seconds=1.0)
    try:
        with pytest.raises(RunInUse):
            pipeline.run(settings, stages)
        assert ran == [] and store.list() == [KEY]  # nothing else written: no settings.json, no marker
    finally:
        proc.kill()
        proc.wait()
    pipeline.run(settings, stages)  # the killed holder was a process of this machine: taken at once
    assert ran == [False]  # held while the stage ran
    assert json.loads(store.read_bytes(KEY))["released"] is True
    off = settings.model_copy(update={"store": settings.store.model_copy(update={"lease_seconds": 0.0})})
    pipeline.run(off.model_copy(update={"run_id": "r2"}), stages)
    assert not LocalStore(tmp_path / "runs" / "r2").exists(KEY)


def test_check_says_who_holds_the_run(tmp_path, monkeypatch, capsys):
    from grpo_job import cli

    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    for k, v in {"GRPO_CONFIG": str(ROOT / "examples" / "smoke.yaml"), "GRPO_STORE__URI": str(tmp_path / "runs"),
                 "GRPO_RUN_ID": "r1", "GRPO_WORK_DIR": str(tmp_path / "work")}.items():
        monkeypatch.setenv(k, v)
    proc = holder_process(str(tmp_path / "runs"), seconds=60.0)
    try:
        assert cli.main(["check", "--log_format=text"]) == 0
        out = capsys.readouterr().out
        assert f"lease  : held by process {proc.pid} on host" in out and "exits 1 if it is renewed" in out
    finally:
        proc.kill()
        proc.wait()
    assert cli.main(["check", "--log_format=text"]) == 0
    assert "that process no longer runs, so `run` takes it over" in capsys.readouterr().out
