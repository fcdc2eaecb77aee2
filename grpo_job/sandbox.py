"""Run model-written programs where they cannot hurt the job: the `code` reward's sandbox.

Each run is a fresh `python -I -S grpo_job/sandbox_child.py` in its own session (process group), in a new
temporary directory (its HOME and cwd, removed afterwards), with an environment built from scratch (PATH,
LANG, HOME: none of the job's variables, so no HF_TOKEN, AWS_* or GRPO_*), under limits on CPU seconds,
wall time, address space, file size and process count. Where the kernel allows it the child also enters
a new user, network and PID namespace (no network; every process it starts dies with it) and Landlock
confines its writes to its directory; `isolation()` says what is in force (`check` prints it). At the end
the whole process group is killed, whatever the program left running.

Stdout and stderr go to unlinked files (the file-size limit caps them; the job reads at most
`Limits.output_bytes`), and the spec (program, tests) arrives over an unlinked file descriptor: the tests
are on no path the program could read. The verdict is the job's: for assert tests, a line with a random
nonce per passed test written by the harness after the test ran (an exit code, printed text or a
rebound `AssertionError` count for nothing); for stdin/stdout cases, the job compares the output. A
program written to attack this harness from inside its own process (reading the nonce out of the
harness' frames) could still forge lines: the limits bound what it can do, not what it can claim.

Runs are spread over the CPU cores by a thread pool (`run_batch`): the threads only wait on processes.
Python is the one language; `Program.language` is the seam for others (a child per language).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CHILD = Path(__file__).with_name("sandbox_child.py")
LANGUAGES = ("python",)


@dataclass(frozen=True)
class Limits:
    """What one run may use. `seconds` is per test case (and for the program's own start); the CPU and
    wall limits of a run are that times the cases it runs, plus `startup_seconds`."""

    seconds: float = 5.0
    memory_mb: int = 512
    file_mb: int = 16
    processes: int = 16
    output_bytes: int = 64 * 1024
    startup_seconds: float = 2.0


@dataclass
class Result:
    """One run: which tests passed (the job's verdict), the captured output and how the run ended."""

    passed: list[bool]
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    isolation: dict[str, bool] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0


@dataclass(frozen=True)
class Program:
    source: str
    language: str = "python"


def workers() -> int:
    """Runs at once: one per CPU core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _environment(home: str) -> dict[str, str]:
    # built from scratch: nothing of the job's environment (tokens, credentials, settings) reaches the program
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": home,
            "TMPDIR": home, "PYTHONDONTWRITEBYTECODE": "1"}


def _unlinked(directory: str, content: bytes = b"") -> int:
    """A file descriptor of a file that has no name any more (nothing to find on disk)."""
    fd, path = tempfile.mkstemp(dir=directory)
    os.unlink(path)
    if content:
        os.write(fd, content)
        os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read(fd: int, limit: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, limit).decode("utf-8", "replace")


def _kill_group(pgid: int, patience: float = 5.0) -> None:
    """SIGKILL the process group until it is empty: processes of a PID namespace die a moment after its init."""
    end = time.monotonic() + patience
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # nobody left in the group
            return
        if time.monotonic() > end:
            return
        time.sleep(0.01)


def _run_child(spec: dict[str, Any], stdin: bytes, limits: Limits, wall: float) -> tuple[int | None, bool, str, str, str, float]:
    """(returncode, timed out, stdout, stderr, verdict text, seconds) of one child run."""
    root = tempfile.mkdtemp(prefix="grpo-sandbox-")
    work = os.path.join(root, "work")
    os.mkdir(work, 0o700)
    private = os.path.join(root, "private")
    os.mkdir(private, 0o700)
    spec = {**spec, "workdir": work}
    fds = []
    try:
        spec_fd = _unlinked(private, json.dumps(spec).encode())
        verdict_fd = _unlinked(private)
        in_fd = _unlinked(private, stdin)
        out_fd, err_fd = _unlinked(private), _unlinked(private)
        fds = [spec_fd, verdict_fd, in_fd, out_fd, err_fd]
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(_CHILD), str(spec_fd), str(verdict_fd)],
            stdin=in_fd, stdout=out_fd, stderr=err_fd, pass_fds=(spec_fd, verdict_fd), cwd=work,
            env=_environment(work), start_new_session=True, close_fds=True,
        )
        timed_out = False
        try:
            code: int | None = proc.wait(timeout=wall)
        except subprocess.TimeoutExpired:
            timed_out, code = True, None
        finally:
            if code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()  # reaped first: a zombie leader keeps its group alive
            _kill_group(proc.pid)  # everything it started, finished or not
        seconds = time.monotonic() - t0
        out, err = _read(out_fd, limits.output_bytes), _read(err_fd, limits.output_bytes)
        verdict = _read(verdict_fd, 1 << 20)
        return code, timed_out, out, err, verdict, seconds
    finally:
        for fd in fds:
            os.close(fd)
        shutil.rmtree(root, onerror=_writable_then_remove)


def _writable_then_remove(func: Callable, path: str, exc_info: Any) -> None:
    """rmtree's error hook: a program may leave read-only directories behind."""
    try:
        os.chmod(os.path.dirname(path), 0o700)
        os.chmod(path, 0o700)
        func(path)
    except OSError:
        pass


def _isolation_of(verdict: str) -> dict[str, bool]:
    first = verdict.split("\n", 1)[0].split()
    if not first or first[0] != "isolation":
        return {}
    return {k: v == "1" for k, v in (item.split("=") for item in first[1:])}


def _spec_limits(limits: Limits, cases: int) -> dict[str, Any]:
    return {"cpu_seconds": limits.seconds * (cases + 1) + limits.startup_seconds,
            "memory_bytes": limits.memory_mb << 20, "file_bytes": limits.file_mb << 20,
            "processes": limits.processes}


def _check_language(program: Program) -> None:
    if program.language not in LANGUAGES:
        raise ValueError(f"the sandbox runs {LANGUAGES}, not {program.language!r}")


def run_asserts(program: Program, tests: Sequence[str], limits: Limits = Limits()) -> Result:
    """Run `program`, then each test (Python code, e.g. asserts) in a copy of its globals. `passed[i]`:
    test i ran to its end without an exception within `limits.seconds`."""
    _check_language(program)
    nonce = secrets.token_hex(16)
    spec = {"mode": "asserts", "program": program.source, "tests": list(tests), "nonce": nonce,
            "case_seconds": limits.seconds, **_spec_limits(limits, len(tests))}
    wall = limits.seconds * (len(tests) + 1) + limits.startup_seconds
    code, timed_out, out, err, verdict, seconds = _run_child(spec, b"", limits, wall)
    passed = [False] * len(tests)
    for line in verdict.split("\n")[1:]:
        parts = line.split()
        if len(parts) == 2 and parts[0] == nonce and parts[1].isdigit() and int(parts[1]) < len(tests):
            passed[int(parts[1])] = True
    return Result(passed, out, err, code, timed_out, seconds, _isolation_of(verdict))


def normalise_output(text: str) -> list[str]:
    """Output compared line by line, each line's runs of whitespace as one space, blank lines at the end dropped
    (APPS/Codeforces-style checkers)."""
    lines = [" ".join(line.split()) for line in text.strip().splitlines()]
    return lines


def run_io(program: Program, stdin: str, expected: str, limits: Limits = Limits()) -> Result:
    """Run `program` as `__main__` with `stdin`; passed when it exits 0 within `limits.seconds` and its
    output equals `expected` (whitespace-normalised)."""
    _check_language(program)
    spec = {"mode": "io", "program": program.source, **_spec_limits(limits, 1)}
    wall = limits.seconds + limits.startup_seconds
    code, timed_out, out, err, verdict, seconds = _run_child(spec, stdin.encode(), limits, wall)
    ok = code == 0 and not timed_out and normalise_output(out) == normalise_output(expected)
    return Result([ok], out, err, code, timed_out, seconds, _isolation_of(verdict))


def run_batch(calls: Sequence[Callable[[], Result]], max_workers: int | None = None) -> list[Result]:
    """Call each (a `functools.partial` of `run_asserts`/`run_io`) on a thread pool sized to the CPU cores;
    results in order."""
    if not calls:
        return []
    pool = ThreadPoolExecutor(max_workers=max_workers or workers(), thread_name_prefix="sandbox")
    try:
        return list(pool.map(lambda call: call(), calls))
    finally:
        # interrupted (the reward's time limit): the runs not started never start; those running end by their limits
        pool.shutdown(wait=True, cancel_futures=True)


@functools.cache
def isolation() -> dict[str, Any]:
    """What confines a run on this machine, probed once with a trivial program: `network` (a new network
    namespace: none), `processes` (a PID namespace, else the process group), `files` (Landlock: writes
    under the run's directory only, else anywhere the user may write), and the limits always applied."""
    got = run_asserts(Program("pass"), ["pass"], Limits(seconds=5)).isolation
    return {
        "network": "none (network namespace)" if got.get("netns") else "the machine's (no network namespace here)",
        "processes": "PID namespace + process group" if got.get("pidns") else "process group",
        "files": "writes under its own directory only (Landlock)" if got.get("landlock")
        else "its own directory as cwd/HOME; writes elsewhere where the user may (no Landlock here)",
        "limits": "CPU seconds, wall time, address space, file size, process count; clean environment",
    }


def describe() -> str:
    """One line for `check`: the isolation in force."""
    i = isolation()
    return f"network {i['network']}; processes: {i['processes']}; files: {i['files']}; {i['limits']}"
