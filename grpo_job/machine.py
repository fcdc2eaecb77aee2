"""What the machine running this process offers, probed once, without importing an ML library.

`probe()` runs at process start (`cli`, and the runner for callers that skip the CLI) and is cached for
the process: whether an NVIDIA GPU is visible, Triton's mode (on a machine without a GPU, TRL's Triton
log-prob kernels run in Triton's interpreter, a flag that must be set before anything imports torch),
torch's CPU threads under a container's CPU limit (also read when torch is imported), and which
generation engines are installed (vLLM, Unsloth). The stages read the cached answer; the
settings' rules never read the machine (grpo_job/settings/environment.py checks settings against it).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    """The probe's answer. `gpu`: an NVIDIA GPU is visible to this process; `vllm`/`unsloth`: the
    package is installed (its import is not tried: that imports torch); `triton_interpreter`: Triton
    runs kernels in its interpreter (TRITON_INTERPRET=1, set by the probe when there is no GPU);
    `cpu_threads`: OMP_NUM_THREADS as the probe set it from the container's CPU limit (None: not set)."""

    gpu: bool
    vllm: bool
    unsloth: bool
    triton_interpreter: bool
    cpu_threads: int | None = None


@functools.cache
def probe() -> Machine:
    """This machine, probed on the first call of the process (see the module docstring). Raises
    RuntimeError when Triton was already imported on a machine without a GPU (see
    `use_triton_interpreter_without_gpu`)."""
    use_triton_interpreter_without_gpu()
    return Machine(gpu=has_cuda_gpu(), vllm=importlib.util.find_spec("vllm") is not None,
                   unsloth=importlib.util.find_spec("unsloth") is not None,
                   triton_interpreter=os.environ.get("TRITON_INTERPRET") == "1", cpu_threads=cap_cpu_threads())


def cpu_limit(root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """The CPUs this process' cgroup may use: its CPU quota over its period, rounded up, the lowest on the
    way up to the hierarchy's root (`docker run --cpus`, a Kubernetes CPU limit). cgroup v2 (`cpu.max`:
    `QUOTA PERIOD`, or `max PERIOD` for none) and v1 (`cpu.cfs_quota_us`, -1 for none, over
    `cpu.cfs_period_us`). None without a quota or anything to read (not Linux, no cgroup files)."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            base, read = root, _v2_quota
        elif "cpu" in controllers.split(","):
            base = next((root / d for d in (controllers, "cpu", "cpu,cpuacct") if (root / d).is_dir()), None)
            read = _v1_quota
        else:
            continue
        if base is None:
            continue
        folder = base / path.strip("/")
        for at in (folder, *folder.parents):
            if quota := read(at):
                limits.append(quota)
            if at == base or base not in at.parents:
                break
    return max(1, math.ceil(min(limits))) if limits else None


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        return None if quota <= 0 else quota / int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def cap_cpu_threads() -> int | None:
    """Set OMP_NUM_THREADS to the cgroup's CPU limit (`cpu_limit`) when that is below the CPUs this
    process may run on and the variable is not set already; return what was set (None: nothing).

    torch starts a CPU thread per core it sees, and a container sees every core of its node: under a
    quota of a few CPUs the threads spend their time throttled and spinning. On the 2-core VM two
    processes of two threads each on two cores ran a smoke step 10x slower than at one thread each
    (docs/benchmarks.md); a 4-CPU limit on a 64-core node is the same thing, larger. Read by torch at its
    import, so this runs before any ML import; child processes (the evaluation, torchrun's) inherit it."""
    if "OMP_NUM_THREADS" in os.environ:
        return None
    limit = cpu_limit()
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if limit is None or limit >= available:
        return None
    os.environ["OMP_NUM_THREADS"] = str(limit)
    return limit


def has_cuda_gpu() -> bool:
    """Whether an NVIDIA GPU is visible, without importing torch or touching the device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def use_triton_interpreter_without_gpu() -> None:
    """On a machine with no CUDA GPU, make Triton run kernels in its interpreter (TRITON_INTERPRET=1).

    TRL computes log-probs with Triton kernels. Without a GPU the job's trainer computes them in torch
    instead (training/logprobs.py), but hands inputs that path does not cover (images, a MoE auxiliary
    loss) to TRL's kernels, which then need the interpreter. Triton reads the flag when `triton` is first
    imported: its own library functions (`tl.max`, `tl.sigmoid`...) are built then, for the
    interpreter or for a GPU. torch imports Triton as a side effect (e.g. `torch._dynamo`, pulled in
    by `from trl import GRPOConfig`), so this runs at process start, before any ML import.

    Raises RuntimeError when Triton was imported before the flag was set: TRL's kernels would fail
    later with "Cannot call @triton.jit'd outside of the scope of a kernel"."""
    if has_cuda_gpu() or os.environ.get("TRITON_INTERPRET") == "1":
        return
    if "triton" in sys.modules:
        raise RuntimeError("Triton was imported before TRITON_INTERPRET=1 was set on this machine without a "
                           "GPU, so TRL's log-prob kernels cannot run here; call "
                           "use_triton_interpreter_without_gpu() before importing torch, or set "
                           "TRITON_INTERPRET=1 in the environment")
    os.environ["TRITON_INTERPRET"] = "1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a one-process torch.distributed group)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
