"""The environment of a job that a test starts as a subprocess, the way a container starts it: a bare
PATH and HOME, the Hub offline, unbuffered output, plus what the test session shares with every run.

Shared from the session (tests/conftest.py sets both):
- `GRPO_CACHE_DIR`: SmolLM2 dequantized once per session, not once per run (about 30 s on 2 cores);
- `OMP_NUM_THREADS`: the session's share of the cores per test process. Two xdist workers whose jobs
  each spread torch over every core spin against each other (OpenMP's busy wait): on the 2-core VM two
  smoke runs at once took 440 s each, against 52 s alone and 73 s at one thread each.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED = ("GRPO_CACHE_DIR", "OMP_NUM_THREADS")


def job_env(home: str | Path, **extra: str) -> dict[str, str]:
    """The variables for `subprocess.run(..., env=...)`: the bare ones, the session's shared ones that
    are set, then `extra` (which wins, so a test can set its own PATH or cache)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env |= {name: os.environ[name] for name in SHARED if name in os.environ}
    return env | extra
