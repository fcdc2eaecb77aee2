"""Stopping early on purpose: SIGTERM (Kubernetes eviction, a spot notice) or a wall-clock deadline.

The signal handler only records that a stop was asked for. The training loop looks at the flag
at each step end (`TrainerCallback.on_step_end`): it then has the trainer save a checkpoint and
stop, the checkpoint is uploaded with its manifest, and the job exits 75 (`StoppedEarly`). A
deadline works the same way, a little earlier: the loop stops when the next step plus the grace
budget would no longer fit before it.

The grace budget is a hard limit: a watchdog thread ends the process with exit 75 when it runs
out (the store's newest complete checkpoint is untouched, because a manifest is only ever written
after its upload finished). The default fits Kubernetes' 30 s `terminationGracePeriodSeconds`.

One StopControl serves the whole run (`install_for_run`, called by the CLI before the first stage):
- between stages the pipeline asks `should_stop()` and exits 75 before starting the next one;
- a stage other than `train` gets the grace budget to finish and write its marker; if it cannot,
  the watchdog ends the process with 75 and the marker stays unwritten (the stage runs again);
- a training step that cannot finish in the grace budget is interrupted while it generates (before
  the optimizer step: weights and optimizer state are still those of the last finished step), by
  raising `StepInterrupted` from the signal handler inside the step's "interruptible" window
  (`step_began` .. `step_updating`). The train stage then saves the last finished step's checkpoint.
- `max_runtime_seconds` counts from the process' start (the container's start, read from
  /proc/self/stat: a re-exec keeps it), not from an import.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from grpo_job.errors import EXIT_RETRY

log = logging.getLogger(__name__)
LAST_WORDS_SECONDS = 3.0  # what the watchdog waits for the closing line before it ends the process


class StepInterrupted(BaseException):
    """Raised inside a training step (while it generates) when it cannot finish in the grace budget.
    A BaseException, like KeyboardInterrupt, so no library's `except Exception` swallows it."""


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
        self.steps_done = 0  # optimizer steps finished in this process
        self.interruptible = False  # inside a step, before its optimizer update (set by the train stage)
        self.interrupted = False
        self.on_hard_exit: Callable[[int], None] | None = None  # last words before the watchdog's exit
        # the checkpoint steps saved here but not yet in the store (set by the train stage: its upload queue)
        self.unsaved_steps: Callable[[], list[int]] | None = None
        self.stage: str | None = None  # the pipeline stage running now (set by the pipeline), named when cut short
        self._previous = None
        self._watchdog: threading.Thread | None = None
        self._done = threading.Event()

    # ---------------------------------------------------------------- signal
    def _on_sigterm(self, signum, frame) -> None:
        # A flag: the pipeline and the training loop act on it at the next stage or step end. The
        # one exception: a step that cannot end in time is interrupted here, while it generates.
        if self.signal_at is None:
            self.signal_at = time.monotonic()
        if self.interruptible and not self.interrupted and not self.step_fits():
            self.interrupted = True
            self.interruptible = False
            raise StepInterrupted()

    def install(self) -> None:
        """Take over SIGTERM (main thread only) and start the watchdog."""
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            # a re-exec (pipeline's fresh process) blocks SIGTERM across the exec: one sent meanwhile
            # is pending and arrives here, at the handler, instead of killing the process with 143
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        self._watchdog = threading.Thread(target=self._watch, name="stop-watchdog", daemon=True)
        self._watchdog.start()

    def uninstall(self) -> None:
        self._done.set()
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    # ---------------------------------------------------------------- decisions
    def step_began(self, interruptible: bool = False) -> None:
        """A training step starts; with `interruptible` it may be interrupted until `step_updating`."""
        self._step_began = time.monotonic()
        self.interruptible = interruptible
        if interruptible and self.signal_at is not None and not self.interrupted and not self.step_fits():
            # SIGTERM came before this step (while the trainer started): do not begin what cannot end
            self.interrupted, self.interruptible = True, False
            raise StepInterrupted()

    def step_updating(self) -> None:
        """The step's optimizer update begins: from here it must run to its end."""
        self.interruptible = False

    def step_ended(self) -> None:
        self.interruptible = False
        self.steps_done += 1
        if self._step_began is not None:
            self.last_step_seconds = time.monotonic() - self._step_began

    def step_fits(self) -> bool:
        """Whether the running step (guessed as long as the last one) ends with half the grace budget
        still left for saving and uploading. An unknown step length (the first step) does not fit."""
        if self._step_began is None or self.last_step_seconds <= 0:
            return False
        limit = self.hard_limit()
        if limit is None:
            return True
        save_from = limit - 0.5 * self.grace_seconds
        return time.monotonic() < save_from and self._step_began + 1.1 * self.last_step_seconds <= save_from

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
            if (limit is not None and self.interruptible and not self.interrupted
                    and time.monotonic() >= limit - 0.5 * self.grace_seconds):
                # the step was guessed to fit and did not: interrupt it now, while the save still fits.
                # A real signal to the main thread (it also ends a blocking call there); its handler
                # decides again.
                signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
            if limit is not None and time.monotonic() >= limit:
                log.error("%s", self.hard_exit_message())
                if self.on_hard_exit is not None:
                    # last words may ask the store, which may be what hangs (trial: a frozen S3 endpoint held the
                    # process 90 s past its budget, past Kubernetes' SIGKILL): they get LAST_WORDS_SECONDS at most
                    finishes_within(LAST_WORDS_SECONDS, self.on_hard_exit, EXIT_RETRY, name="last-words")
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass
                os._exit(EXIT_RETRY)  # from a thread: the only way to end the process now


    def hard_exit_message(self) -> str:
        """What the watchdog says as it ends the process: the stage cut short and what happens to it."""
        why = "SIGTERM" if self.signal_at is not None else "the deadline"
        advice = ("Raise GRPO_STOP__GRACE_SECONDS (and the pod's terminationGracePeriodSeconds) if this repeats"
                  + ("" if self.deadline is None or self.signal_at is not None
                     else ", or move GRPO_STOP__DEADLINE / GRPO_STOP__MAX_RUNTIME_SECONDS later") + ".")
        if self.stage is not None and self.stage != "train":
            return (f"stop: the grace budget ({self.grace_seconds:.0f} s) after {why} ran out during stage "
                    f"{self.stage!r}, which was cut short: its marker is not written, so it runs again from its start "
                    f"when the job restarts (the finished stages and the trained model in the store are kept). {advice}")
        unsaved = self.unsaved_steps() if self.unsaved_steps is not None else []
        if unsaved:  # trial: "the current step is abandoned" after training had ended, the lost uploads unnamed
            return (f"stop: the grace budget ({self.grace_seconds:.0f} s) after {why} ran out while checkpoint(s) "
                    f"{', '.join(map(str, unsaved))} were uploading (is the store answering?): they are not in the "
                    "store and are lost. A restart resumes from the store's newest complete checkpoint and trains the "
                    f"steps after it again. {advice}")
        return (f"stop: the grace budget ({self.grace_seconds:.0f} s) after {why} ran out before a checkpoint could be "
                "saved and uploaded; the current step is abandoned. The store's newest complete checkpoint is kept; "
                f"a restart resumes there. {advice}")


def finishes_within(seconds: float, target: Callable[..., object], *args: object, name: str) -> bool:
    """Call `target(*args)` in a daemon thread and wait `seconds` at most: True when it returned (or raised) in
    time. For calls that may ask a frozen store while the process is ending: a daemon thread left waiting does
    not hold the process at its exit."""
    worker = threading.Thread(target=target, args=args, name=name, daemon=True)
    worker.start()
    worker.join(seconds)
    return not worker.is_alive()


def process_start_time() -> float:
    """When this process started (Unix seconds): from /proc (Linux), where an exec keeps the original
    start, else the time this module was first imported."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime, in clock ticks after boot
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT


_IMPORTED_AT = time.time()
_RUN: StopControl | None = None


def install_for_run(stop_settings) -> StopControl:
    """The run's StopControl, installed (SIGTERM handler, watchdog) for every stage."""
    global _RUN
    if _RUN is None:
        _RUN = from_settings(stop_settings)
        _RUN.install()
    return _RUN


def uninstall_run() -> None:
    """Hand SIGTERM back and stop the run's watchdog (the CLI does this when `run` returns)."""
    global _RUN
    if _RUN is not None:
        _RUN.uninstall()
        _RUN = None


def current() -> StopControl | None:
    """The run's StopControl if `install_for_run` was called in this process."""
    return _RUN


def from_settings(stop_settings) -> StopControl:
    """A StopControl for `JobSettings.stop`: the earlier of `deadline` and start + `max_runtime_seconds`."""
    candidates = []
    if stop_settings.deadline is not None:
        candidates.append(stop_settings.deadline.timestamp())
    if stop_settings.max_runtime_seconds is not None:
        candidates.append(process_start_time() + stop_settings.max_runtime_seconds)
    deadline = datetime.fromtimestamp(min(candidates)).astimezone() if candidates else None
    return StopControl(stop_settings.grace_seconds, deadline)
