"""The sandbox's child: confine this process, then run one model-written program (see grpo_job/sandbox.py).

Run by the job as `python -I -S sandbox_child.py SPEC_FD VERDICT_FD` in a fresh session, a temporary
working directory and an environment built from scratch. It reads its spec (JSON) from SPEC_FD and closes
it, so the tests are on no disk the program can read; then, before any of the program runs:

- resource limits: CPU seconds, address space, file size, no core files, and a process count;
- where the kernel allows: a new user + network + PID namespace (no network; every process the program
  starts dies with it) and Landlock (files may be written under the working directory only);
- mode `asserts`: the program runs once, then each test in its own copy of the program's globals under
  a per-test timer; the test functions a test defines (pytest's `test*`, `Test*` classes, unittest's TestCases)
  are then called. For each test that ends without an exception the harness writes `<nonce> <index>` to
  VERDICT_FD: a program that exits early (sys.exit, os._exit), prints "PASS", rebinds `AssertionError`
  (the `assert` statement raises the real one) or deletes files has no line for the tests it skipped.
- mode `io`: the program runs as `__main__` with stdin and stdout as the job gave them; the job compares
  the output itself.

The first verdict line says which isolation is in force (`isolation netns=1 pidns=1 landlock=1`).
Standard library only: this file runs without site-packages (`-S`).
"""

import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x10000000, 0x40000000, 0x20000000
PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG = 38, 1
# Landlock (linux/landlock.h): the write-like rights, handled so that only the rules below grant them
_LL_WRITE = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12)
_LL_REFER, _LL_TRUNCATE = 1 << 13, 1 << 14
_SYS_LANDLOCK = (444, 445, 446)  # create_ruleset, add_rule, restrict_self: one number on x86-64 and arm64


class TimeLimitExceeded(BaseException):
    """Raised by the per-test timer; a BaseException so that a program's `except Exception` cannot swallow it."""


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _user_processes() -> int:
    uid, n = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def _limit(spec: dict) -> None:
    cpu = max(1, int(spec["cpu_seconds"] + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (spec["memory_bytes"], spec["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["file_bytes"], spec["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # RLIMIT_NPROC counts every process of this user, so the allowance goes on top of those alive now
    nproc = _user_processes() + spec["processes"]
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _namespaces(libc) -> bool:
    """A new user, network and PID namespace; this process forks the PID namespace's init, which runs the
    program and dies with this process (PDEATHSIG). False when the kernel refuses (then nothing changed)."""
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID) != 0:
        return False
    pid = os.fork()
    if pid:  # the outer harness: wait for the namespace's init and pass its status on
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return True


def _landlock(libc, workdir: str) -> bool:
    """Writes allowed beneath `workdir` (and to /dev/null) only; reads and execution anywhere."""
    abi = libc.syscall(_SYS_LANDLOCK[0], None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return False
    handled = _LL_WRITE | (_LL_REFER if abi >= 2 else 0) | (_LL_TRUNCATE if abi >= 3 else 0)
    attr = ctypes.c_uint64(handled)
    ruleset = libc.syscall(_SYS_LANDLOCK[0], ctypes.byref(attr), ctypes.sizeof(attr), 0)
    if ruleset < 0:
        return False

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    for path, rights in ((workdir, handled), ("/dev/null", (1 << 1) | (_LL_TRUNCATE if abi >= 3 else 0))):
        fd = os.open(path, os.O_PATH)
        rule = PathBeneath(rights, fd)
        ok = libc.syscall(_SYS_LANDLOCK[1], ruleset, 1, ctypes.byref(rule), 0) == 0
        os.close(fd)
        if not ok:
            os.close(ruleset)
            return False
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        os.close(ruleset)
        return False
    ok = libc.syscall(_SYS_LANDLOCK[2], ruleset, 0) == 0
    os.close(ruleset)
    return ok


def _run_asserts(spec: dict, write) -> None:
    import builtins

    nonce, seconds = spec["nonce"], spec["case_seconds"]

    def on_timer(signum, frame):
        # said in the error line `check` shows (trial Y: an internal class name and nothing after it)
        raise TimeLimitExceeded(f"ran past its time limit of {seconds:g} s (the code reward's seconds_per_case)")

    namespace = {"__name__": "solution", "__builtins__": builtins}
    # unittest's machinery as it is before the program runs: a program that patches it (TestResult.wasSuccessful,
    # TestCase.assertEqual) would pass every TestCase, so the tests that use it check it is unchanged
    unittest_as_imported = _unittest_state() if any("TestCase" in t for t in spec["tests"]) else None
    signal.signal(signal.SIGALRM, on_timer)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        exec(compile(spec["program"], "solution.py", "exec"), namespace)
    except BaseException as e:  # anything the program raises (SystemExit too) ends it with no test passed
        signal.setitimer(signal.ITIMER_REAL, 0)
        print(f"the program raised {type(e).__name__}: {e}", file=sys.stderr)
        return
    signal.setitimer(signal.ITIMER_REAL, 0)
    for index, test in enumerate(spec["tests"]):
        signal.signal(signal.SIGALRM, on_timer)  # the program may have replaced the handler
        passed = False
        try:
            signal.setitimer(signal.ITIMER_REAL, seconds)
            scope = dict(namespace)
            exec(compile(test, f"test_{index}.py", "exec"), scope)
            _call_defined_tests(namespace, scope, unittest_as_imported)
            passed = True
        except BaseException as e:  # a failed assert, an error, the timer, a SystemExit: not passed
            print(f"test {index}: {type(e).__name__}: {e}"[:2000], file=sys.stderr)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if passed:
            write(f"{nonce} {index}\n")


def _unittest_state() -> dict:
    import unittest

    classes = (unittest.TestCase, unittest.TestResult, unittest.TestSuite, unittest.TestLoader)
    state = {(c.__name__, k): v for c in classes for k, v in vars(c).items()}
    return {**state, ("unittest", "defaultTestLoader"): unittest.defaultTestLoader}


def _call_defined_tests(before: dict, after: dict, unittest_as_imported: dict | None = None) -> None:
    """pytest's and unittest's conventions, for test code that defines its tests instead of running them: the
    functions named `test*` it defines are called; so are the `test*` methods of the classes named `Test*` (with
    pytest's `setup_method`/`teardown_method`); its unittest TestCase subclasses, of any name, run under
    unittest. In the order defined; any failure raises. Without this, `def test_0(): assert f(3) == 6` passed
    every program, an empty one too (trials). Test code of plain asserts defines none of these."""
    import types

    unittest = sys.modules.get("unittest")  # imported by test code that subclasses TestCase
    for name, obj in list(after.items()):
        if before.get(name) is obj or getattr(obj, "__module__", None) != after.get("__name__"):
            continue  # the program's own names, and what the test code imported (`from unittest import TestCase`)
        if isinstance(obj, type) and unittest is not None and issubclass(obj, unittest.TestCase):
            if unittest_as_imported is None or _unittest_state() != unittest_as_imported:
                raise AssertionError("unittest is not as the harness imported it: the program changed it")
            result = unittest.TestResult()
            unittest.defaultTestLoader.loadTestsFromTestCase(obj).run(result)
            if not result.wasSuccessful():
                raise AssertionError(f"{name}: {len(result.failures)} failed and {len(result.errors)} errors of "
                                     f"{result.testsRun} tests")
        elif isinstance(obj, type) and name.startswith("Test") and "__init__" not in vars(obj):  # pytest's rule
            for method in [m for m in vars(obj) if m.startswith("test") and callable(getattr(obj, m))]:
                instance = obj()
                if hasattr(instance, "setup_method"):
                    instance.setup_method(getattr(instance, method))
                try:
                    getattr(instance, method)()
                finally:
                    if hasattr(instance, "teardown_method"):
                        instance.teardown_method(getattr(instance, method))
        elif name.startswith("test") and isinstance(obj, types.FunctionType):
            obj()


def _run_io(spec: dict) -> int:
    import builtins
    import traceback

    namespace = {"__name__": "__main__", "__builtins__": builtins}
    code = 0
    try:
        exec(compile(spec["program"], "solution.py", "exec"), namespace)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # the program's error: shown on stderr, exit 1
        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
    except BaseException:  # output beyond the file-size limit, or a closed stdout: the output is what it is
        code = code or 1
    return code


def main() -> None:
    spec_fd, verdict_fd = int(sys.argv[1]), int(sys.argv[2])
    with os.fdopen(spec_fd, "rb") as f:
        spec = json.loads(f.read())
    libc = _libc()
    _limit(spec)
    netns = _namespaces(libc)
    landlock = _landlock(libc, spec["workdir"])
    os.write(verdict_fd, f"isolation netns={int(netns)} pidns={int(netns)} landlock={int(landlock)}\n".encode())
    builtins_exit = sys.exit  # `exit()` and `quit()` come from site, which -S leaves out
    import builtins

    builtins.exit = builtins.quit = builtins_exit
    if spec["mode"] == "asserts":
        write = os.write
        _run_asserts(spec, lambda line: write(verdict_fd, line.encode()))
        del spec
        sys.stdout.flush()
        os._exit(0)
    code = _run_io(spec)
    os._exit(code if 0 <= code < 256 else 1)


if __name__ == "__main__":
    main()
