"""Stopping early on purpose: SIGTERM (Kubernetes eviction, a spot notice) or a wall-clock deadline.

The signal handler only records that a stop was asked for. The training loop looks at the flag
at each step end (`TrainerCallback.on_step_end`): it then has the trainer save a checkpoint and
stop, the checkpoint is uploaded with its manifest, and the job exits 75 (`StoppedEarly`). A
deadline works the same way, a little earlier: the loop stops when the next step plus the grace
budget would no longer fit before it.

The grace budget is a hard limit: a watchdog thread ends the process with exit 75 when it runs
out (a step that cannot finish in time is abandoned; the store's newest complete checkpoint is
untouched, because a manifest is only ever written after its upload finished). The default fits
Kubernetes' 30 s `terminationGracePeriodSeconds`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from datetime import datetime

from grpo_job.errors import EXIT_RETRY

log = logging.getLogger(__name__)


class StopControl:
    """When to stop: set by SIGTERM or by the deadline; enforced within `grace_seconds`."""

    def __init__(self, grace_seconds: float, deadline: datetime | None = None):
        self.grace_seconds = grace_seconds
        # the deadline as a monotonic instant (immune to clock steps while running)
        self.deadline = None if deadline is None else time.monotonic() + (deadline.timestamp() - time.time())
        self.signal_at: float | None = None
        self.reason: str | None = None
        self.last_step_seconds = 0.0
        self._step_began: float | None = None
        self._previous = None
        self._watchdog: threading.Thread | None = None
        self._done = threading.Event()

    # ---------------------------------------------------------------- signal
    def _on_sigterm(self, signum, frame) -> None:
        # Only a flag: the training loop does the work at the next step end.
        if self.signal_at is None:
            self.signal_at = time.monotonic()

    def install(self) -> None:
        """Take over SIGTERM (main thread only) and start the watchdog."""
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._watchdog = threading.Thread(target=self._watch, name="stop-watchdog", daemon=True)
        self._watchdog.start()

    def uninstall(self) -> None:
        self._done.set()
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    # ---------------------------------------------------------------- decisions
    def step_began(self) -> None:
        self._step_began = time.monotonic()

    def step_ended(self) -> None:
        if self._step_began is not None:
            self.last_step_seconds = time.monotonic() - self._step_began

    def hard_limit(self) -> float | None:
        """The monotonic instant by which the process must have exited, if any."""
        limits = [t for t in (self.deadline,) if t is not None]
        if self.signal_at is not None:
            limits.append(self.signal_at + self.grace_seconds)
        return min(limits) if limits else None

    def seconds_left(self) -> float | None:
        limit = self.hard_limit()
        return None if limit is None else limit - time.monotonic()

    def should_stop(self) -> str | None:
        """The reason to stop now (at a step end), or None to go on."""
        if self.reason is None:
            if self.signal_at is not None:
                self.reason = "SIGTERM"
            elif self.deadline is not None:
                # the next step (guessed as long as the last, plus a margin) and the save must still fit
                needed = 1.25 * self.last_step_seconds + self.grace_seconds
                if self.deadline - time.monotonic() <= needed:
                    self.reason = "deadline"
        return self.reason

    # ---------------------------------------------------------------- watchdog
    def _watch(self) -> None:
        while not self._done.wait(0.2):
            limit = self.hard_limit()
            if limit is not None and time.monotonic() >= limit:
                why = "SIGTERM" if self.signal_at is not None else "the deadline"
                log.error(
                    "stop: the grace budget (%.0f s) after %s ran out before a checkpoint could be saved and "
                    "uploaded; the current step is abandoned. The store's newest complete checkpoint is kept; "
                    "a restart resumes there. Raise GRPO_STOP__GRACE_SECONDS (and the pod's "
                    "terminationGracePeriodSeconds) if this repeats.", self.grace_seconds, why,
                )
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass
                os._exit(EXIT_RETRY)  # from a thread: the only way to end the process now


_PROCESS_START = time.time()


def from_settings(stop_settings) -> StopControl:
    """A StopControl for `JobSettings.stop`: the earlier of `deadline` and start + `max_runtime_seconds`."""
    candidates = []
    if stop_settings.deadline is not None:
        candidates.append(stop_settings.deadline.timestamp())
    if stop_settings.max_runtime_seconds is not None:
        candidates.append(_PROCESS_START + stop_settings.max_runtime_seconds)
    deadline = datetime.fromtimestamp(min(candidates)).astimezone() if candidates else None
    return StopControl(stop_settings.grace_seconds, deadline)
