"""The sandbox itself (grpo_job/sandbox.py): what a program sees and may do, and how its runs end."""

import pytest

from grpo_job import sandbox

SECRET = "hf_sandbox_test_secret_9f3a"


def test_the_program_sees_none_of_the_jobs_environment(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("GRPO_RUN_ID", "secret-run")
    result = sandbox.run_asserts(sandbox.Program("import os\nprint(dict(os.environ))"), ["pass"])
    assert SECRET not in result.stdout and "GRPO" not in result.stdout and "HOME" in result.stdout
    assert result.passed == [True]


def test_no_network_where_the_kernel_gives_a_namespace():
    result = sandbox.run_asserts(sandbox.Program(
        "import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('1.1.1.1', 53))"), ["pass"])
    if not result.isolation.get("netns"):
        pytest.skip("no network namespace on this kernel: check prints the isolation in force")
    assert result.passed == [False] and "unreachable" in result.stderr.lower()


def test_isolation_is_described_for_check():
    line = sandbox.describe()
    assert line.startswith("network ") and "process" in line


def test_the_tests_are_on_no_disk_and_the_directory_is_the_programs():
    result = sandbox.run_asserts(sandbox.Program(
        "import os\nprint(sorted(os.listdir('.')), os.getcwd() == os.environ['HOME'])\nopen('mine.txt', 'w').write('ok')"),
        ["assert open('mine.txt').read() == 'ok'", "assert 'assert' not in open('/proc/self/cmdline').read()"])
    assert result.stdout.startswith("[] True") and result.passed == [True, True]


def test_io_case_needs_exit_status_0_and_output_is_capped():
    ok = sandbox.run_io(sandbox.Program("print(input().upper())"), "abc\n", "ABC")
    crash = sandbox.run_io(sandbox.Program("print('ABC')\nraise ValueError('late')"), "", "ABC")
    assert ok.passed == [True] and crash.passed == [False] and "ValueError: late" in crash.stderr
    flood = sandbox.run_io(sandbox.Program("while True:\n    print('y' * 1000)"), "", "y",
                           sandbox.Limits(seconds=1, file_mb=1, output_bytes=4096))
    assert flood.passed == [False] and len(flood.stdout) == 4096  # the file-size limit ended it, the job kept 4 KiB


def test_other_languages_are_refused_clearly():
    with pytest.raises(ValueError, match="runs \\('python',\\)"):
        sandbox.run_asserts(sandbox.Program("int main() {}", language="c"), ["pass"])
