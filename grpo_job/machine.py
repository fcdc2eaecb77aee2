"""What the machine running this process offers, probed once, without importing an ML library.

`probe()` runs at process start (`cli`, and the runner for callers that skip the CLI) and is cached for
the process: whether an NVIDIA GPU is visible, Triton's mode (on a machine without a GPU, TRL's Triton
log-prob kernels run in Triton's interpreter, a flag that must be set before anything imports torch),
and which generation engines are installed (vLLM, Unsloth). The stages read the cached answer; the
settings' rules never read the machine (grpo_job/settings/environment.py checks settings against it).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    """The probe's answer. `gpu`: an NVIDIA GPU is visible to this process; `vllm`/`unsloth`: the
    package is installed (its import is not tried: that imports torch); `triton_interpreter`: Triton
    runs kernels in its interpreter (TRITON_INTERPRET=1, set by the probe when there is no GPU)."""

    gpu: bool
    vllm: bool
    unsloth: bool
    triton_interpreter: bool


@functools.cache
def probe() -> Machine:
    """This machine, probed on the first call of the process (see the module docstring). Raises
    RuntimeError when Triton was already imported on a machine without a GPU (see
    `use_triton_interpreter_without_gpu`)."""
    use_triton_interpreter_without_gpu()
    return Machine(gpu=has_cuda_gpu(), vllm=importlib.util.find_spec("vllm") is not None,
                   unsloth=importlib.util.find_spec("unsloth") is not None,
                   triton_interpreter=os.environ.get("TRITON_INTERPRET") == "1")


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
