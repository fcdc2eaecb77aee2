"""Multi-process runs: the launcher's plan and exit codes, the settings' rules for several processes,
and (slow) two real processes under torchrun (gloo on CPU) training SmolLM2 against the loopback S3
store: SIGTERM to one of them stops both at the same step with one checkpoint, a restart resumes
both from it, and only the main process ever wrote to the store."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grpo_job import distributed, errors, launch
from grpo_job.errors import SettingsError
from grpo_job.settings import load_settings
from grpo_job.store import LocalStore
from grpo_job.training import engines
from tests.job_env import job_env

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- which process am I
def test_launch_comes_from_torchruns_variables():
    one = distributed.current({})
    assert (one.rank, one.world_size, one.multi, one.is_main) == (0, 1, False, True)
    second = distributed.current({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"})
    assert (second.rank, second.local_rank, second.multi, second.is_main, second.is_local_main) == (5, 1, True, False, False)
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        distributed.current({"WORLD_SIZE": "two"})


def test_processes_other_than_the_main_one_read_the_store_but_cannot_write_it(tmp_path):
    inner = LocalStore(tmp_path / "run")
    inner.write_text("stages/prepare_data.json", "{}")
    ro = distributed.ReadOnlyStore(inner, "process rank 1/2")
    assert ro.exists("stages/prepare_data.json") and ro.read_text("stages/prepare_data.json") == "{}"
    for write in (lambda: ro.write_text("x", "y"), lambda: ro.put_file(tmp_path / "f", "k"),
                  lambda: ro.delete_prefix("stages"), lambda: ro.write_if("lease.json", b"{}", None)):
        with pytest.raises(RuntimeError, match="only the main process"):
            write()
    assert inner.list("") == ["stages/prepare_data.json"]
    assert ro.read_tagged("stages/prepare_data.json")[:2] == inner.read_tagged("stages/prepare_data.json")[:2]


def test_a_waiting_process_goes_on_once_the_main_writes_the_marker(tmp_path):
    store = LocalStore(tmp_path / "run")
    threading.Timer(0.3, lambda: store.write_text("stages/prepare_data.json", "{}")).start()
    t0 = time.monotonic()
    distributed.wait_for(store, "stages/prepare_data.json", "prepare_data", poll_seconds=0.05)
    assert 0.25 < time.monotonic() - t0 < 5


# ---------------------------------------------------------------- settings for several processes
def _settings(*overrides, env=None, monkeypatch=None):
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    return load_settings(ROOT / "examples/smoke.yaml", list(overrides))


def test_the_batch_must_hold_whole_groups_on_the_launchs_world_size(monkeypatch):
    # 4 completions per process, groups of 8: fine on 2 processes, not on 1 or 3
    args = ("--train.num_generations=8", "--train.per_device_train_batch_size=4")
    assert _settings(*args, env={"WORLD_SIZE": "2"}, monkeypatch=monkeypatch).train.resolved_world_size() == 2
    with pytest.raises(SettingsError, match=r"4 per_device_train_batch_size x 1 gradient_accumulation_steps x 3 "
                                            r"world_size = 12\) must be divisible by num_generations \(8\)"):
        _settings(*args, env={"WORLD_SIZE": "3"}, monkeypatch=monkeypatch)
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(SettingsError, match="world_size = 4"):
        _settings(*args)


def test_multi_process_rules_name_what_to_set(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(SettingsError) as e:
        _settings("--model.engine=unsloth", "--distributed.vllm_tensor_parallel_size=3",
                  "--distributed.strategy=fsdp", "--model.load_in_4bit=true")
    text = str(e.value)
    assert "model.engine=unsloth runs one process on one GPU, but this launch has 4 processes" in text
    assert "GRPO_MODEL__ENGINE=trl" in text
    assert "vllm_tensor_parallel_size (3) must divide the number of training processes (4)" in text
    assert "distributed.strategy=fsdp shards the base model" in text and "GRPO_MODEL__LOAD_IN_4BIT=false" in text
    # the same settings on one process are fine except the tensor-parallel split
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(SettingsError) as e:
        _settings("--model.engine=trl", "--distributed.vllm_tensor_parallel_size=3")
    assert "must divide" in str(e.value) and "unsloth" not in str(e.value)
    # a sharded strategy applies to one process too, with the same rules
    with pytest.raises(SettingsError) as e:
        _settings("--model.engine=unsloth", "--distributed.strategy=fsdp", "--model.load_in_4bit=true")
    assert "strategy=fsdp is not available with model.engine=unsloth" in str(e.value)
    assert "shards the base model" in str(e.value)


def test_fsdp_next_to_colocated_vllm_warns_with_what_was_seen():
    warned = [w for w in _settings("--distributed.strategy=fsdp", "--model.load_in_4bit=false").warnings()
              if "strategy=fsdp" in w]
    assert warned and "illegal memory access" in warned[0] and "strategy=ddp" in warned[0]
    assert not [w for w in _settings().warnings() if "strategy=" in w]


def test_auto_engine_is_trl_for_several_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    s = _settings("--model.engine=auto")
    assert engines.pick_engine(s) == "trl"


def test_strategies_map_to_grpoconfig_arguments():
    assert engines.strategy_args("ddp") == {"ddp_find_unused_parameters": False}
    fsdp = engines.strategy_args("fsdp")
    assert fsdp["fsdp"] == "full_shard auto_wrap" and fsdp["fsdp_config"]["version"] == 2
    zero3 = engines.strategy_args("zero3")["deepspeed"]
    assert zero3["zero_optimization"]["stage"] == 3 and zero3["train_micro_batch_size_per_gpu"] == "auto"
    from trl import GRPOConfig

    # the names are GRPOConfig's own
    names = set(GRPOConfig.__dataclass_fields__)
    for strategy in ("ddp", "fsdp", "zero3"):
        assert set(engines.strategy_args(strategy)) <= names


# ---------------------------------------------------------------- the launcher's plan and exit code
def test_launcher_splits_gpus_between_training_and_the_vllm_server(monkeypatch):
    monkeypatch.delenv("PET_NPROC_PER_NODE", raising=False)
    gpus = ["0", "1", "2", "3"]
    colocate = _settings()
    assert launch.plan_gpus(colocate, gpus, first_node=True) == (4, gpus, [])
    server = _settings("--distributed.vllm_mode=server", "--distributed.vllm_server_gpus=2")
    assert launch.plan_gpus(server, gpus, first_node=True) == (2, ["0", "1"], ["2", "3"])
    # other nodes have no server: all their GPUs train
    assert launch.plan_gpus(server, gpus, first_node=False) == (4, gpus, [])
    with pytest.raises(SettingsError, match="gives 2 GPU\\(s\\) to vLLM but this node has 1"):
        launch.plan_gpus(server, ["0"], first_node=True)
    with pytest.raises(SettingsError, match="no GPU is left for training processes after the vLLM server's"):
        launch.plan_gpus(server, ["0", "1"], first_node=True)
    with pytest.raises(SettingsError, match="none is visible"):
        launch.plan_gpus(colocate, [], first_node=True)
    assert launch.plan_gpus(_settings("--distributed.nproc_per_node=2"), [], first_node=True) == (2, [], [])
    with pytest.raises(SettingsError, match="only 2 GPU\\(s\\) are free"):
        launch.plan_gpus(_settings("--distributed.nproc_per_node=3"), ["0", "1"], first_node=True)
    # torchrun's own variable (Kubeflow Trainer sets it): a number, or "auto" for one per GPU
    monkeypatch.setenv("PET_NPROC_PER_NODE", "2")
    assert launch.plan_gpus(colocate, gpus, first_node=True) == (2, ["0", "1"], [])
    monkeypatch.setenv("PET_NPROC_PER_NODE", "auto")
    assert launch.plan_gpus(colocate, gpus, first_node=True) == (4, gpus, [])


def test_visible_gpus_and_node_count_come_from_the_usual_variables():
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert launch.nnodes({"PET_NNODES": "1:4"}) == 4 and launch.nnodes({}) == 1
    assert launch.node_rank({"PET_NODE_RANK": "3"}) == 3
    with pytest.raises(SettingsError, match="PET_NNODES"):
        launch.nnodes({"PET_NNODES": "x"})


@pytest.mark.parametrize(("codes", "torchrun", "terminated", "expected"), [
    ({0: 0, 1: 0}, 0, False, errors.EXIT_OK),
    ({0: 75, 1: 75}, 1, False, errors.EXIT_RETRY),  # a coordinated stop: torchrun calls it a failure
    ({0: 75}, 1, False, errors.EXIT_FAILURE),  # rank 1 left no code: it crashed
    ({0: 2, 1: 75}, 1, False, errors.EXIT_INVALID),  # the main's bad input wins over the others' stop
    ({0: 3, 1: 75}, 1, False, errors.EXIT_UNHEALTHY),
    ({0: 1, 1: 75}, 1, False, errors.EXIT_FAILURE),
    ({}, 1, True, errors.EXIT_RETRY),  # SIGTERM to the launcher before any process wrote a code
    ({}, 1, False, errors.EXIT_FAILURE),
    ({0: 0}, 0, False, errors.EXIT_FAILURE),  # torchrun says fine but a process is unaccounted for
])
def test_the_launcher_reports_the_jobs_exit_code_not_torchruns(codes, torchrun, terminated, expected):
    assert launch.resolve_exit(codes, 2, torchrun, terminated) == expected


def test_launch_rejects_bad_settings_before_starting_anything(tmp_path):
    r = subprocess.run([sys.executable, "entrypoint.py", "launch", "--config", "examples/smoke.yaml",
                        "--distributed.nproc_per_node=3", "--train.num_generations=4",
                        "--train.per_device_train_batch_size=2"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120, env={**os.environ, "PATH": os.environ["PATH"]})
    assert r.returncode == errors.EXIT_INVALID, r.stderr
    assert "x 3 world_size = 6) must be divisible by num_generations (4)" in r.stderr
    assert "torch.distributed.run" not in r.stderr


# ---------------------------------------------------------------- two real processes
class Launched:
    """`entrypoint.py launch` with 2 CPU processes, the JSON log lines of all of them collected."""

    def __init__(self, s3env, work: Path, run_id: str, *extra: str):
        cmd = [sys.executable, str(ROOT / "entrypoint.py"), "launch", "--config", str(ROOT / "examples/smoke.yaml"),
               f"--store.uri=s3://{s3env.bucket}/runs", f"--run_id={run_id}", f"--work_dir={work}",
               "--log_format=json", "--distributed.nproc_per_node=2", "--export.merge=false",
               "--evaluation.enabled=false", "--report.enabled=false", "--health.preflight_samples=0",
               "--data.max_samples=32", "--train.max_completion_length=16",
               '--rewards={"tests.reward_fixtures:length_reward": 1.0}', *extra]
        env = job_env(work.parent, PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin", **s3env.env)
        # the job's JSON log lines go to stderr (every process' and the launcher's); stdout has the
        # trainer's own prints
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                     env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    def records(self) -> list[dict]:
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]

    def messages(self) -> list[str]:
        return [r["msg"] for r in self.records()]

    def wait(self, timeout: float = 1500) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return rc

    def tail(self) -> str:
        return "".join(line for line in self.lines[-60:] if "it/s]" not in line)

    def worker(self, rank: int):
        import psutil

        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank) and "entrypoint.py" in " ".join(child.cmdline()):
                    return child
            except psutil.Error:
                continue
        raise AssertionError(f"no process of rank {rank} under the launcher")


def _manifest_steps(s3env, run_id: str) -> list[int]:
    keys = s3env.keys(f"runs/{run_id}/checkpoints/")
    return sorted(int(k.split("/")[-2].split("-")[1]) for k in keys if k.endswith("/manifest.json"))


@pytest.mark.slow
def test_two_processes_stop_together_resume_together_and_only_the_main_one_writes(s3, tmp_path):
    run_id = "two-procs"
    work = tmp_path / "work"
    # a generous grace budget: a CPU step here takes about as long as the default 25 s
    first = Launched(s3, work, run_id, "--train.max_steps=4", "--train.save_steps=1", "--store.keep_last=4",
                     "--stop.grace_seconds=240")
    end = time.monotonic() + 1200
    while not _manifest_steps(s3, run_id):
        assert first.proc.poll() is None, f"ended (rc {first.proc.returncode}) before checkpoint-1:\n{first.tail()}"
        assert time.monotonic() < end, first.tail()
        time.sleep(0.5)
    first.worker(1).send_signal(signal.SIGTERM)  # one process only: both must stop, at the same step
    assert first.wait() == errors.EXIT_RETRY, first.tail()
    stops = [m for m in first.messages() if m.startswith("stop: ")]
    assert len(stops) == 2, stops  # one decision per process...
    assert any(m.startswith("stop: SIGTERM;") for m in stops)
    assert any(m.startswith("stop: stopping on another process;") for m in stops)
    stopped_at = {m.split("saving checkpoint-")[1].split(",")[0] for m in stops}
    assert len(stopped_at) == 1, stops  # ...at the same step
    step = int(stopped_at.pop())
    assert step < 4 and _manifest_steps(s3, run_id)[-1] == step  # ...and that checkpoint is complete in the store
    assert "training processes ended: exit codes {0: 75, 1: 75}" in first.tail()

    # a new pod: nothing local survives
    import shutil

    shutil.rmtree(work)
    second = Launched(s3, work, run_id, "--train.max_steps=4", "--train.save_steps=1", "--store.keep_last=4")
    assert second.wait() == errors.EXIT_OK, second.tail()
    resumed = [m for m in second.messages() if m.startswith(f"resumed from checkpoint-{step} ")]
    # every process loaded the checkpoint and checked it against the saved files
    assert any("(rank 0/2" in m for m in resumed) and any("(rank 1/2" in m for m in resumed), resumed
    train = json.loads(s3.direct.get_object(Bucket=s3.bucket, Key=f"runs/{run_id}/stages/train.json")["Body"].read())
    assert (train["steps"], train["resumed_from"], train["processes"]) == (4, step, 2)

    # one writer: every request that changed the store came from rank 0; rank 1 only read
    writes = [r for r in s3.proxy.seen if r.method in ("PUT", "POST", "DELETE")]
    assert writes and {("grpo-job/rank-0" in r.user_agent) for r in writes} == {True}
    reads_by_1 = [r for r in s3.proxy.seen if "grpo-job/rank-1" in r.user_agent]
    assert reads_by_1 and {r.method for r in reads_by_1} <= {"GET", "HEAD"}


def test_the_launcher_waits_for_the_vllm_servers_health_and_notices_a_dead_server(tmp_path):
    """`_wait_for_server` against a real HTTP server process: 503 until it is ready, then 200 on /health."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import http.server, time\n"
        "t0 = time.monotonic()\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        ready = self.path == '/health' and time.monotonic() - t0 > 1.0\n"
        "        self.send_response(200 if ready else 503); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )
    server = subprocess.Popen([sys.executable, "-c", code])
    try:
        t0 = time.monotonic()
        launch._wait_for_server(server, f"http://127.0.0.1:{port}/health", timeout=30)
        assert 0.9 < time.monotonic() - t0 < 25
        with pytest.raises(RuntimeError, match="did not answer .* within 3 s"):
            launch._wait_for_server(server, f"http://127.0.0.1:{port}/not-health", timeout=3)
        with pytest.raises(InterruptedError, match="SIGTERM"):  # the pod is being stopped: do not wait on
            launch._wait_for_server(server, f"http://127.0.0.1:{port}/not-health", timeout=30, stopped=lambda: True)
    finally:
        server.kill()
        server.wait()
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    dead.wait()
    with pytest.raises(RuntimeError, match="exited with code 7 before it answered"):
        launch._wait_for_server(dead, f"http://127.0.0.1:{port}/health", timeout=30)
