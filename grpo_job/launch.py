"""`entrypoint.py launch`: the job on several GPUs, one training process per GPU, through torchrun.

    python entrypoint.py launch [--config FILE] [--section.field=value ...]

1. Checks the settings for the number of processes it is about to start (exit 2 before any GPU
   is touched): the batch must hold whole groups on that many processes, and so on.
2. With `distributed.vllm_mode=server`, on the first node: starts `trl vllm-serve` on the node's
   last `distributed.vllm_server_gpus` GPUs and waits until it answers.
3. Runs torchrun with one `entrypoint.py run` per remaining GPU. Several nodes: torchrun reads
   its usual PET_NNODES / PET_NODE_RANK / PET_MASTER_ADDR / PET_MASTER_PORT (or PET_RDZV_ENDPOINT)
   variables, which Kubeflow Trainer sets and k8s/multinode/jobset.yaml sets by hand.
4. Passes SIGTERM on to torchrun, which passes it to every process: they stop together at the
   next step end, the main process uploads one checkpoint, and all exit 75.
5. Exits with the job's exit code (grpo_job/errors.py), not torchrun's (torchrun says only "failed"):
   each process leaves its code in a file in GRPO_EXIT_CODE_DIR, and the launcher reports the one
   that matters most: 2 (settings), 3 (health guard), 1 (a crash, or a process that left no
   code), 75 (stopped after saving), 0.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from grpo_job import errors
from grpo_job.errors import SettingsError
from grpo_job.settings import JobSettings, deferred_world_checks

log = logging.getLogger(__name__)

EXIT_CODE_DIR = "GRPO_EXIT_CODE_DIR"
ENTRYPOINT = Path(__file__).resolve().parent.parent / "entrypoint.py"


def visible_gpus(env: dict[str, str] | None = None) -> list[str]:
    """The GPUs this process may use (CUDA_VISIBLE_DEVICES, or every GPU the driver lists), without torch."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    gpus = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(gpus.iterdir())))] if gpus.is_dir() else []


def nnodes(env: dict[str, str] | None = None) -> int:
    """Nodes in the launch, from torchrun's PET_NNODES (`2`, or `1:4` when elastic: the most)."""
    value = (os.environ if env is None else env).get("PET_NNODES", "1")
    try:
        return int(value.split(":")[-1])
    except ValueError:
        raise SettingsError(f"PET_NNODES={value!r} is not a node count (N or MIN:MAX)") from None


def node_rank(env: dict[str, str] | None = None) -> int:
    value = (os.environ if env is None else env).get("PET_NODE_RANK", "0")
    try:
        return int(value)
    except ValueError:
        raise SettingsError(f"PET_NODE_RANK={value!r} is not a whole number") from None


def plan_gpus(s: JobSettings, gpus: list[str], first_node: bool) -> tuple[int, list[str], list[str]]:
    """(training processes on this node, their GPUs, the vLLM server's GPUs). Raises SettingsError."""
    d = s.distributed
    server = d.vllm_mode == "server" and first_node
    server_gpus = gpus[len(gpus) - d.vllm_server_gpus:] if server and len(gpus) >= d.vllm_server_gpus else []
    if server and not server_gpus:
        raise SettingsError(
            f"distributed.vllm_mode=server gives {d.vllm_server_gpus} GPU(s) to vLLM but this node has {len(gpus)}; "
            "set GRPO_DISTRIBUTED__VLLM_SERVER_GPUS lower, or GRPO_DISTRIBUTED__VLLM_MODE=colocate"
        )
    train_gpus = gpus[: len(gpus) - len(server_gpus)]
    # torchrun's own variable may say a number, or "auto"/"gpu" (one per GPU, which is our default too)
    pet_nproc = os.environ.get("PET_NPROC_PER_NODE", "")
    nproc = d.nproc_per_node or (int(pet_nproc) if pet_nproc.isdigit() else None)
    if nproc is None:
        if not train_gpus:
            raise SettingsError(
                "no GPU is left for training processes" + (" after the vLLM server's" if server_gpus else
                                                           " (none is visible)") +
                "; set GRPO_DISTRIBUTED__NPROC_PER_NODE to launch that many processes anyway (CPU: gloo)"
            )
        nproc = len(train_gpus)
    elif train_gpus and nproc > len(train_gpus):
        raise SettingsError(
            f"distributed.nproc_per_node={nproc} but only {len(train_gpus)} GPU(s) are free for training on this node "
            f"({len(gpus)} visible, {len(server_gpus)} for the vLLM server); lower GRPO_DISTRIBUTED__NPROC_PER_NODE"
        )
    return nproc, train_gpus[:nproc] if train_gpus else [], server_gpus


def resolve_exit(codes: dict[int, int], expected: int, torchrun_code: int, terminated: bool) -> int:
    """The launcher's exit code from its processes' codes (rank -> code; missing ranks left no code)."""
    written = set(codes.values())
    for code in (errors.EXIT_INVALID, errors.EXIT_UNHEALTHY):
        if code in written:
            return code
    if terminated:  # we were asked to stop: what was saved is in the store, a restart resumes
        return errors.EXIT_RETRY
    if written - {errors.EXIT_OK, errors.EXIT_RETRY} or (len(codes) < expected and torchrun_code != 0):
        return errors.EXIT_FAILURE
    if errors.EXIT_RETRY in written:
        return errors.EXIT_RETRY
    return errors.EXIT_OK if torchrun_code == 0 and len(codes) >= expected else errors.EXIT_FAILURE


def record_exit(code: int) -> None:
    """Called by `entrypoint.py run` as it ends: leave this process' exit code for the launcher."""
    folder = os.environ.get(EXIT_CODE_DIR)
    if folder:
        rank = os.environ.get("RANK", "0")
        Path(folder, f"rank-{rank}").write_text(str(code))


def _wait_for_server(proc: subprocess.Popen, url: str, timeout: float, stopped=lambda: False) -> None:
    """Until `url` answers 200. Raises if the server exits, `timeout` passes, or `stopped()` (SIGTERM)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stopped():
            raise InterruptedError("SIGTERM while the vLLM server was starting")
        if proc.poll() is not None:
            raise RuntimeError(f"the vLLM server exited with code {proc.returncode} before it answered")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(2)
    raise RuntimeError(f"the vLLM server did not answer {url} within {timeout:.0f} s "
                       "(GRPO_DISTRIBUTED__VLLM_SERVER_TIMEOUT)")


def _start_server(s: JobSettings, gpus: list[str], stopped) -> subprocess.Popen:
    from grpo_job import models
    from grpo_job.training import engines

    d = s.distributed
    model = models.resolve(s.model, s.resolved_cache_dir())
    cmd = [shutil.which("trl") or "trl", "vllm-serve", "--model", model, "--tensor-parallel-size", str(len(gpus)),
           "--host", "0.0.0.0", "--port", str(d.vllm_server_port),
           "--gpu-memory-utilization", str(s.model.gpu_memory_utilization),
           "--max-model-len", str(engines.vllm_max_model_len(s.model.max_seq_length, engines.model_max_positions(model)))]
    if s.model.revision:
        cmd += ["--revision", s.model.revision]
    log.info("starting the vLLM server on GPU(s) %s: %s", ",".join(gpus), " ".join(cmd))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(gpus)}
    proc = subprocess.Popen(cmd, env=env)
    try:
        _wait_for_server(proc, f"http://127.0.0.1:{d.vllm_server_port}/health", d.vllm_server_timeout, stopped)
    except BaseException:
        _stop(proc)
        raise
    log.info("the vLLM server answers on port %d", d.vllm_server_port)
    return proc


def _stop(proc: subprocess.Popen | None, grace: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(config: str | None, overrides: list[str]) -> int:
    from grpo_job import logs
    from grpo_job.settings import load_settings

    first = node_rank() == 0
    try:
        # The process count comes from the settings and the GPUs: read them first without the rules
        # that depend on it, then check everything for the world about to be started.
        with deferred_world_checks():
            probe = load_settings(config, overrides)
        logs.setup(probe.log_format)
        nproc, train_gpus, server_gpus = plan_gpus(probe, visible_gpus(), first)
        world = nproc * nnodes()
        # the same settings, checked for the world they are about to run in
        settings = load_settings(config, [*overrides, f"--train.world_size={world}"])
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return errors.EXIT_INVALID
    for w in settings.warnings():
        log.warning("settings: %s", w)
    log.info("launch: node %d of %d, %d training process(es)%s%s", node_rank(), nnodes(), nproc,
             f" on GPU(s) {','.join(train_gpus)}" if train_gpus else " (no GPU: gloo on CPU)",
             f", vLLM server on GPU(s) {','.join(server_gpus)}" if server_gpus else "")

    terminated = False
    torchrun: subprocess.Popen | None = None
    server: subprocess.Popen | None = None

    def on_sigterm(signum, frame):
        nonlocal terminated
        terminated = True
        if torchrun is not None and torchrun.poll() is None:
            log.warning("SIGTERM: passing it to the training processes (they save, then exit 75)")
            torchrun.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    exit_dir = Path(tempfile.mkdtemp(prefix="grpo-exit-"))
    try:
        if server_gpus:
            server = _start_server(settings, server_gpus, stopped=lambda: terminated)
        env = {**os.environ, EXIT_CODE_DIR: str(exit_dir)}
        if train_gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(train_gpus)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
        if nnodes() == 1 and not os.environ.get("PET_RDZV_ENDPOINT") and not os.environ.get("PET_MASTER_ADDR"):
            cmd.append("--standalone")  # one node: a local rendezvous on a free port
        cmd += [str(ENTRYPOINT), "run", *([f"--config={config}"] if config else []), *overrides]
        log.info("starting: %s", " ".join(cmd))
        torchrun = subprocess.Popen(cmd, env=env)
        torchrun_code = torchrun.wait()
        codes = {int(p.name.split("-")[1]): int(p.read_text()) for p in exit_dir.glob("rank-*")}
        code = resolve_exit(codes, nproc, torchrun_code, terminated)
        log.info("training processes ended: exit codes %s (torchrun %d) -> %d",
                 dict(sorted(codes.items())) or "none written", torchrun_code, code)
        return code
    except SettingsError as e:
        log.error("%s", e)
        return errors.EXIT_INVALID
    except InterruptedError as e:
        log.warning("%s; nothing was trained, exiting 75", e)
        return errors.EXIT_RETRY
    except Exception as e:
        log.error("launch failed: %s: %s", type(e).__name__, e)
        return errors.EXIT_FAILURE
    finally:
        _stop(torchrun)
        _stop(server)
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(exit_dir, ignore_errors=True)
