"""Multi-process runs: which process this is, and how the processes agree.

A multi-process run is started by torchrun (directly, through `accelerate launch`, or through
`entrypoint.py launch`, which wraps torchrun), one process per GPU. torchrun hands every process
RANK, LOCAL_RANK, WORLD_SIZE and LOCAL_WORLD_SIZE; nothing here starts processes or talks to
GPUs by itself. The rules the rest of the job follows:

- Only the main process (global rank 0) writes to the run store: settings, data, done-markers,
  checkpoints with their manifests, metrics, the adapter, the report. Every other process opens
  the store read-only (`ReadOnlyStore`), so a stray write from one of them fails loudly.
- Every stage except `train` runs in the main process alone. Before `train` the other processes
  wait for the main's done-markers in the store; after `train` they end.
- Inside `train` (once the trainer's process group is up): files on a node's own disk that all
  its processes read (the model cache, the restored checkpoint) are made by the node's first
  process while the others wait (TrainingArguments.main_process_first), and the decision to stop
  early is taken together (`any_process`), so SIGTERM on any one process gives one coordinated save.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpo_job.store import RunStore
from grpo_job.store.base import Tagged

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Launch:
    """This process' place in the launch (all zeros and ones when not launched by torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def multi(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    def __str__(self) -> str:
        return f"rank {self.rank}/{self.world_size} (local {self.local_rank}/{self.local_world_size})"


def current(env: dict[str, str] | None = None) -> Launch:
    """The launch this process belongs to, from torchrun's environment variables."""
    env = os.environ if env is None else env

    def num(name: str, default: int) -> int:
        value = env.get(name, "")
        try:
            return int(value) if value.strip() else default
        except ValueError:
            raise ValueError(f"{name}={value!r} is not a whole number; it is set by the launcher (torchrun)") from None

    world = num("WORLD_SIZE", 1)
    return Launch(rank=num("RANK", 0), local_rank=num("LOCAL_RANK", 0), world_size=world,
                  local_world_size=num("LOCAL_WORLD_SIZE", world))


# ---------------------------------------------------------------- the store, for processes other than the main
class ReadOnlyStore(RunStore):
    """A store that reads through to another and refuses every write: what non-main processes get."""

    def __init__(self, inner: RunStore, who: str):
        self.inner, self.who = inner, who
        self.uri = inner.uri

    def _refuse(self, what: str, key: str) -> None:
        raise RuntimeError(f"{self.who} tried to {what} {key!r} in the run store; only the main process (rank 0) "
                           "writes there (a bug in the job)")

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def read_bytes(self, key: str) -> bytes:
        return self.inner.read_bytes(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        self._refuse("write", key)

    def put_file(self, local: Path, key: str) -> None:
        self._refuse("upload", key)

    def get_file(self, key: str, local: Path) -> None:
        self.inner.get_file(key, local)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def delete_prefix(self, prefix: str) -> None:
        self._refuse("delete", prefix)

    def check_reachable(self) -> None:
        self.inner.check_reachable()

    def read_tagged(self, key: str) -> Tagged | None:
        return self.inner.read_tagged(key)

    def write_if(self, key: str, data: bytes, tag: str | None) -> str | None:
        self._refuse("write", key)


def wait_for(store: RunStore, key: str, what: str, poll_seconds: float = 2.0) -> None:
    """Block until `key` exists in the store (the main process finished `what`).

    No timeout of its own: if the main process fails, the launcher (torchrun) ends the others.
    """
    t0 = last_note = time.monotonic()
    while not store.exists(key):
        if time.monotonic() - last_note >= 60:
            log.info("still waiting for the main process to finish %s (%.0f s)", what, time.monotonic() - t0)
            last_note = time.monotonic()
        time.sleep(poll_seconds)


def allow_indexed_cpu_locations() -> None:
    """Several processes on CPUs (gloo): accelerate names each one's device `cpu:<local rank>`, and
    on resume transformers loads the optimizer with that device as `map_location`, which torch.load
    does not know. Tell torch.load, through its public `register_package`, that `cpu:N` is the CPU."""
    global _cpu_locations_known
    if _cpu_locations_known:
        return
    import torch.serialization as ser

    def _indexed_cpu(obj: Any, location: str) -> Any:
        return obj if re.fullmatch(r"cpu:\d+", location) else None

    ser.register_package(97, lambda obj: None, _indexed_cpu)  # after torch's own (10-26): only what they refuse
    _cpu_locations_known = True


_cpu_locations_known = False


# ---------------------------------------------------------------- collectives (the trainer's process group)
def _group_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device() -> Any:
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":  # NCCL only moves CUDA tensors
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on at least one (a collective: all must call it)."""
    if not _group_ready():
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_main(value: Any) -> Any:
    """The main process' `value`, on every process (a collective)."""
    if not _group_ready():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if _group_ready():
        import torch.distributed as dist

        dist.barrier()


def finish() -> None:
    """Leave the process group after training: the other processes end, the main one goes on alone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        barrier()
        dist.destroy_process_group()
