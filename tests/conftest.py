"""Fixtures shared by several test modules, and the environment every test starts from."""

import os

import pytest

from grpo_job import machine

# the loopback S3 fixtures (tests/s3_server.py: s3_server, s3), for every test module that asks for them
pytest_plugins = ("s3_server",)

# as the job's process does first thing: Triton reads this at its first import, which any test importing
# torch (or TRL's GRPOConfig) can cause; TRL's CPU kernels in a later training test depend on it
machine.probe()

# Variables that would change what a test sees: the job's settings and the credentials of the machine
# that runs the tests (a developer's shell, a CI secret). The GPU harness's own GRPO_GPU_* are kept.
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
              "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def pytest_configure(config):
    """Torch's CPU threads per test process: the cores shared out among the xdist workers (the
    controller sets it before starting them; they inherit it, as do the jobs tests start, through
    tests/job_env.py). Left to itself every process spreads over every core, and two at once spin
    against each other in OpenMP's busy wait: two smoke runs at once took 440 s each on the 2-core VM,
    against 52 s alone and 73 s at one thread each. A value set outside is kept."""
    if hasattr(config, "workerinput") or "OMP_NUM_THREADS" in os.environ:
        return
    workers = config.getoption("numprocesses", default=None)
    cores = os.cpu_count() or 1
    workers = workers if isinstance(workers, int) and workers > 0 else (cores if workers else 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, cores // workers))


@pytest.fixture(scope="session")
def shared_cache_dir(tmp_path_factory):
    """One `cache_dir` for every run of the session, its xdist workers included: SmolLM2's GGUF is
    dequantized once (about 50 s on 2 cores) instead of once per test's work dir. Runs share it as pods
    share a volume (models.move_into_cache settles a race)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "grpo-cache"


@pytest.fixture(autouse=True)
def clean_job_environment(monkeypatch, shared_cache_dir):
    """Every test starts without GRPO_* settings or credentials from outside; a test sets its own. Runs
    keep their cache in the session's (`GRPO_CACHE_DIR`; a test may set another)."""
    from grpo_job.settings.loading import RESERVED_ENV

    for name in list(os.environ):
        if (name.startswith("GRPO_") and name not in RESERVED_ENV) or name in SECRET_ENV:
            monkeypatch.delenv(name)
    monkeypatch.setenv("GRPO_CACHE_DIR", str(shared_cache_dir))


@pytest.fixture(scope="session")
def chat_models(tmp_path_factory):
    """Tokenizer-only model folders (see tests/chat_models.py), built once per session."""
    from tests import chat_models

    return chat_models.build(tmp_path_factory.mktemp("chat-models"))
