"""grpo_job.machine: torch's CPU threads under a container's CPU limit (cgroup v1 and v2 files, as a
kernel writes them, in a folder standing for /sys/fs/cgroup)."""

import os

import pytest

from grpo_job import machine


def _v2(tmp_path, cgroup_path, files):
    """A cgroup v2 tree: `files` maps a folder under the root ("" for the root) to its cpu.max text."""
    root = tmp_path / "cgroup"
    for folder, text in files.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(text)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{cgroup_path}\n")
    return root, proc


@pytest.mark.parametrize("files, cgroup_path, want", [
    ({"": "200000 100000\n"}, "/", 2),                                 # docker run --cpus=2 (cgroup namespace)
    ({"": "150000 100000\n"}, "/", 2),                                 # 1.5 CPUs: rounded up
    ({"": "50000 100000\n"}, "/", 1),                                  # half a CPU: at least one thread
    ({"": "max 100000\n"}, "/", None),                                 # no limit
    ({"kubepods/pod1/c1": "max 100000\n", "kubepods/pod1": "400000 100000\n"}, "/kubepods/pod1/c1", 4),  # the pod's
    ({"a": "800000 100000\n", "a/b": "300000 100000\n"}, "/a/b", 3),  # the lowest on the way up
    ({}, "/", None),                                                   # no cpu.max anywhere
])
def test_cpu_limit_reads_cgroup_v2(tmp_path, files, cgroup_path, want):
    root, proc = _v2(tmp_path, cgroup_path, files)
    assert machine.cpu_limit(root, proc) == want


def test_cpu_limit_reads_cgroup_v1_and_skips_other_controllers(tmp_path):
    root = tmp_path / "cgroup"
    cpu = root / "cpu,cpuacct" / "docker" / "abc"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("250000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    (root / "memory").mkdir()
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    assert machine.cpu_limit(root, proc) == 3
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert machine.cpu_limit(root, proc) is None
    assert machine.cpu_limit(root, tmp_path / "missing") is None  # not Linux / no /proc


@pytest.mark.parametrize("limit, preset, want", [(1, None, "1"), (64, None, None), (None, None, None), (1, "7", "7")])
def test_cap_sets_omp_threads_only_under_a_limit_below_the_cpus_and_keeps_a_users_choice(
        monkeypatch, limit, preset, want):
    monkeypatch.setattr(machine, "cpu_limit", lambda: limit)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    if preset is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", preset)
    got = machine.cap_cpu_threads()
    assert os.environ.get("OMP_NUM_THREADS") == want
    assert got == (int(want) if want and preset is None else None)
