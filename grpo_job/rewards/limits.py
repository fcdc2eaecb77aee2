"""Every reward runs under a time limit (`health.reward_time_limit`): in `check`'s dry call, the preflight
and training. A reward that exceeds it raises `RewardTimeLimit` naming it, never hangs the job.

`limited` wraps a reward for TRL. A synchronous reward runs where TRL calls it (the main thread: math-verify's
signal-based timeout keeps working inside it); a watchdog thread interrupts it at the limit, on the main
thread with a signal whose handler raises (a sleep or a Python loop stops at once), on another thread
with an asynchronous exception. The interruption is a BaseException, so a reward's own `except
Exception` cannot swallow it. An async reward is awaited under `asyncio.wait_for`. Code that cannot be
interrupted is stopped by the watchdog's last resort after a grace period: the error is logged and the
process exits with the phase's code (2 before training, 1 in it). A C call that holds the interpreter
(a catastrophic regex) lets no Python thread run at all: for that, `faulthandler`'s C watchdog dumps
every thread's stack (the reward's frame among them) and exits 1 after twice the grace period.

Each call's seconds are logged through TRL's `log_metric` as `rewards/<name>/seconds` (per step, next to
TRL's `rewards/<name>/mean`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import faulthandler
import functools
import inspect
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from grpo_job.errors import EXIT_FAILURE, JobError

log = logging.getLogger(__name__)

# A real-time signal: no library of the job's stack uses it (SIGALRM is math-verify's, SIGTERM the stop's).
_SIGNAL = signal.SIGRTMIN + 3


class RewardTimeLimit(JobError):
    """A reward took longer than `health.reward_time_limit`."""

    def __init__(self, name: str, limit: float):
        self.name, self.limit = name, limit
        super().__init__(
            f"reward {name!r} did not return within health.reward_time_limit={limit:g} s; it was stopped. Make "
            f"rewards.{name} faster (or give it its own time limits), or raise GRPO_HEALTH__REWARD_TIME_LIMIT")


class _Interrupted(BaseException):
    """Raised inside a reward at its limit (a BaseException: `except Exception` in the reward lets it through)."""


def callable_name(func: Any) -> str:
    """The name TRL logs a reward under (`rewards/<name>/mean`), as TRL 1.15's `get_callable_name` gives it
    (a partial -> its function's name; a callable object -> its `__name__` or class name). Written out so that
    naming a reward imports no TRL: the import costs 6-15 s in every process that scores rewards, the fresh
    evaluation process included; tests/test_rewards.py holds it equal to TRL's on a table of reward forms."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def is_async(func: Any) -> bool:
    """True when calling `func` returns a coroutine, as TRL 1.15's `is_async_callable` decides it (async
    functions, partials of them, objects with an async `__call__`); no TRL import (see `callable_name`)."""
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(func.__call__)


def _hard_exit(name: str, limit: float, code: int) -> None:
    log.error("%s; it could not be interrupted (a call that holds the interpreter), so the job exits %d",
              RewardTimeLimit(name, limit), code)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(code)


class _Watch:
    """One call's watchdog: at `limit` interrupts the calling thread, after `grace` more ends the process."""

    def __init__(self, name: str, limit: float, exit_code: int, interrupt: bool):
        self.name, self.limit, self.exit_code = name, limit, exit_code
        self.thread = threading.current_thread()
        self.main = self.thread is threading.main_thread()
        self.fired = self.finished = False
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.interrupt = interrupt
        self.previous: Any = None

    def grace(self) -> float:
        return max(5.0, self.limit / 4)

    def __enter__(self) -> _Watch:
        # one C-level timer per process: rewards are called one after another (TRL gathers async ones, which
        # each re-arm it; the last armed covers them)
        with contextlib.suppress(ValueError, AttributeError, RuntimeError, OSError):  # no stderr descriptor
            faulthandler.dump_traceback_later(self.limit + 2 * self.grace(), exit=True, file=sys.__stderr__)
        if self.interrupt and self.main:
            self.previous = signal.signal(_SIGNAL, self._on_signal)
        threading.Thread(target=self._watch, name=f"reward-limit-{self.name}", daemon=True).start()
        return self

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.fired and not self.finished:
            raise _Interrupted()

    def _watch(self) -> None:
        if self.done.wait(self.limit):
            return
        with self.lock:
            if self.finished:
                return
            self.fired = True
            if self.interrupt and self.main:
                signal.pthread_kill(self.thread.ident, _SIGNAL)
            elif self.interrupt:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread.ident),
                                                           ctypes.py_object(_Interrupted))
        if not self.done.wait(self.grace()):
            _hard_exit(self.name, self.limit, self.exit_code)

    def __exit__(self, *exc: Any) -> None:
        with self.lock:
            self.finished = True
        self.done.set()
        faulthandler.cancel_dump_traceback_later()
        if self.interrupt and self.main:
            signal.signal(_SIGNAL, self.previous)


def limited(name: str, func: Any, limit: float, exit_code: int = EXIT_FAILURE) -> Any:
    """`func` (a built reward) under a time limit of `limit` seconds, logging its seconds per call; raises
    RewardTimeLimit(name) when it is exceeded. Keeps the name TRL logs it under and its signature."""
    logged = callable_name(func)

    def report(kwargs: dict[str, Any], t0: float) -> None:
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric(f"rewards/{logged}/seconds", time.monotonic() - t0)

    if is_async(func):
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.monotonic()
            with _Watch(name, limit, exit_code, interrupt=False):
                try:
                    out = await asyncio.wait_for(func(*args, **kwargs), limit)
                except TimeoutError:
                    raise RewardTimeLimit(name, limit) from None
            report(kwargs, t0)
            return out
    else:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.monotonic()
            watch = _Watch(name, limit, exit_code, interrupt=True)
            try:
                with watch:
                    out = func(*args, **kwargs)
            except _Interrupted:
                raise RewardTimeLimit(name, limit) from None
            if watch.fired:  # it returned as the limit struck: over the limit all the same
                raise RewardTimeLimit(name, limit)
            report(kwargs, t0)
            return out

    functools.update_wrapper(wrapper, func)  # __wrapped__: inspect.signature gives the reward's own
    wrapper.__name__ = wrapper.__qualname__ = logged
    return wrapper
