"""One process at a time per run: the run's lease, `lease.json` in its store.

Two processes writing one run's checkpoints and markers spoil each other's resume: a second `docker run`
of the same settings, a CI re-run while the first is alive, a replacement pod that Kubernetes starts
while a lost node's pod still trains. The process that runs the stages takes the lease before the first
stage and renews it from a thread every quarter of `store.lease_seconds`. A starting process finds:

- no lease, or a released one (its holder ended: done, exit 2, 3 or 75): it takes it at once;
- its own (the same process after the re-exec that follows `train`): it takes it back at once;
- one held by a process of this machine and PID namespace that is gone (a job killed in a shell loop, on a
  VM or a laptop): it takes it over at once;
- any other: it watches it. Renewed within `lease_seconds` (or the holder's own, if longer): the run is in
  use, `RunInUse` (exit 1) names the holder. Not renewed for that long since its last write, by the store's
  clock (S3: the server's, so no two machines' clocks are compared): its holder is gone (SIGKILL, a lost node,
  a container killed for memory: a new container or pod has its own PID namespace, so it waits what is left of
  the window); taken over.

Every write is a compare-and-swap (`RunStore.write_if`: S3's conditional PUT, a lock file on a local
store), so of two processes starting at once only one wins. A holder whose renewal finds the lease taken
over was the one presumed gone: it logs why and leaves at once (exit 1), writing nothing more.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grpo_job.errors import EXIT_FAILURE, JobError
from grpo_job.store.base import RunStore

log = logging.getLogger(__name__)

KEY = "lease.json"


class RunInUse(JobError):
    """Another live process holds the run's lease: a second run of one `run_id` would spoil both."""


def holder_identity() -> dict[str, Any]:
    """This process as a lease names it: host, PID namespace, PID and the PID's start (clock ticks after
    boot, from /proc: an exec keeps all four, so the re-exec after `train` is the same holder)."""
    return {"host": socket.gethostname(), "pid_namespace": _pid_namespace(), "pid": os.getpid(),
            "started": _start_ticks(os.getpid())}


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _gone_from_here(holder: dict[str, Any]) -> bool:
    """The holder is a process of this host and PID namespace that no longer runs (its PID is free or
    reused by a later process). Another namespace's PIDs say nothing here: False."""
    me = holder_identity()
    if holder.get("host") != me["host"] or me["pid_namespace"] is None or holder.get("pid_namespace") != me["pid_namespace"]:
        return False
    pid = holder.get("pid")
    if type(pid) is not int:
        return False
    started = _start_ticks(pid)
    return started is None or started != holder.get("started")


def _describe(holder: dict[str, Any]) -> str:
    return f"process {holder.get('pid')} on host {holder.get('host')!r}"


class Lease:
    """The run's lease as held by this process; `release()` hands it back (idempotent)."""

    def __init__(self, store: RunStore, seconds: float, tag: str, beat: int, holder: dict[str, Any],
                 on_lost: Callable[[str], None] | None = None):
        self.store, self.seconds, self.holder = store, seconds, holder
        self._tag, self._beat = tag, beat
        self._on_lost = on_lost or _leave
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_renewing(self) -> None:
        """Renew every `seconds / 4` from a daemon thread (an exec or the process' end stops it)."""
        self._thread = threading.Thread(target=self._renew_loop, name="run-lease", daemon=True)
        self._thread.start()

    def renew(self) -> bool:
        """One renewal; False when another process has taken the lease over (nothing written then)."""
        with self._lock:
            tag = self.store.write_if(KEY, _body(self.holder, self._beat + 1, self.seconds), self._tag)
            if tag is None:
                return False
            self._tag, self._beat = tag, self._beat + 1
            return True

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            try:
                held = self.renew()
            except Exception as e:  # a store hiccup: the lease lasts `seconds`, there are three more tries
                log.warning("run lease: renewal failed (%s: %s); trying again in %.0f s", type(e).__name__, e,
                            self.seconds / 4)
                continue
            if not held:
                self._on_lost(
                    f"run lease: another process took this run over ({self.store.uri}/{KEY}) after it saw no renewal "
                    f"for {self.seconds:.0f} s (this process or its store was unreachable); this process stops "
                    "without writing more. Raise store.lease_seconds if the store is often that slow")
                return

    def release(self) -> None:
        """Stop renewing and mark the lease released (the next start takes it at once). A failure is logged,
        not raised: it must not hide why the run ended, and an unreleased lease only delays the next start."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            with self._lock:
                body = _body(self.holder, self._beat + 1, self.seconds, released=True)
                if self.store.write_if(KEY, body, self._tag) is not None:
                    self._tag = None
        except Exception as e:
            log.warning("run lease: could not release %s/%s (%s: %s); the next start waits up to %.0f s for it",
                        self.store.uri, KEY, type(e).__name__, e, self.seconds)


def _leave(message: str) -> None:
    """A lost lease: log, flush, leave at once. Not an exception: the main thread may be deep in a
    training step, and any cleanup would write into a run another process now owns."""
    log.error(message)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_FAILURE)


def _body(holder: dict[str, Any], beat: int, seconds: float, released: bool = False) -> bytes:
    return json.dumps({"holder": holder, "beat": beat, "seconds": seconds, "released": released,
                       "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1).encode()


def _parse(data: bytes) -> dict[str, Any] | None:
    """The lease as this module writes it; None when it is not (cut short, edited by hand): no holder can
    be read from it, so none is honoured."""
    try:
        lease = json.loads(data)
    except ValueError:
        return None
    if not isinstance(lease, dict) or type(lease.get("beat")) is not int or not isinstance(lease.get("released"), bool):
        return None
    holder = lease.get("holder")
    if not isinstance(holder, dict) or not isinstance(holder.get("host"), str) or type(holder.get("pid")) is not int:
        return None
    return lease


def held_elsewhere(store: RunStore) -> str | None:
    """Who holds the run's lease, when another process does (not released), for `check`: a live holder and
    a dead one look alike until `run` watches the lease; None when nobody else holds it."""
    current = store.read_tagged(KEY)
    lease = _parse(current[0]) if current is not None else None
    if lease is None or lease["released"] or lease["holder"] == holder_identity():
        return None
    gone = "; that process no longer runs, so `run` takes it over" if _gone_from_here(lease["holder"]) else (
        "; `run` exits 1 if it is renewed within store.lease_seconds, else takes it over")
    return f"held by {_describe(lease['holder'])}, last written {lease.get('written_at', '?')}{gone}"


def acquire(store: RunStore, seconds: float, on_lost: Callable[[str], None] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> Lease:
    """Take the run's lease (the rules in this module's docstring); raises RunInUse when another process
    renews it while this one watches for up to `seconds`. `on_lost`: called with a message when a renewal
    finds the lease taken over (default: log and exit 1 at once)."""
    me = holder_identity()
    watched: tuple[str, float] | None = None  # (tag, when last written) of another holder's lease
    while True:
        current = store.read_tagged(KEY)
        if current is None:
            if (tag := store.write_if(KEY, _body(me, 0, seconds), None)) is not None:
                return Lease(store, seconds, tag, 0, me, on_lost)
            continue  # another process created it just now: read it
        data, tag, age = current
        lease = _parse(data)
        if lease is None:
            holder, beat, why = {}, 0, f"it is not a lease this job wrote (cut short or edited): {data[:80]!r}"
        else:
            holder, beat = lease["holder"], lease["beat"]
            why = ("" if holder == me or lease["released"] else
                   "its holder no longer runs" if _gone_from_here(holder) else None)
        # a holder renews every quarter of its own lease_seconds: wait for the longer of the two
        own = lease.get("seconds") if lease is not None else None
        window = max(seconds, own) if isinstance(own, (int, float)) and not isinstance(own, bool) else seconds
        first_sight = watched is None and why is None
        if first_sight:
            # counted from its last write by the store's clock: a replacement pod that starts a minute after its
            # predecessor was killed waits what is left of the window, not a whole one
            watched = (tag, time.monotonic() - min(age or 0.0, window))
        if why is None and watched is not None and watched[0] == tag and time.monotonic() - watched[1] >= window:
            why = f"no renewal for {window:.0f} s"
        if why is not None:
            if (new := store.write_if(KEY, _body(me, beat + 1, seconds), tag)) is not None:
                if why:
                    log.warning("run lease: took over %s/%s%s: %s", store.uri, KEY,
                                f" from {_describe(holder)}" if holder else "", why)
                return Lease(store, seconds, new, beat + 1, me, on_lost)
            continue
        if watched is not None and watched[0] != tag:
            raise RunInUse(
                f"run {store.uri} is in use: {_describe(holder)} holds its lease ({KEY}, renewed while this process "
                "watched). Two runs of one run_id would overwrite each other's checkpoints. Wait for it to end "
                f"(a lease its holder left unreleased is taken over after {window:.0f} s without renewal), or set "
                "GRPO_RUN_ID to start another run")
        if first_sight:
            quiet = time.monotonic() - watched[1]
            log.info("run lease: %s holds %s/%s, last written %.0f s ago; watching it for up to %.0f s more",
                     _describe(holder), store.uri, KEY, quiet, window - quiet)
        sleep(max(0.05, min(window / 8, 5.0)))
