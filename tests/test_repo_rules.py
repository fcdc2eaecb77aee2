"""Rules about the repository itself: what its messages and documents tell users to set exists."""

import re
from pathlib import Path

import pytest

from grpo_job.settings.loading import unknown_env_names

ROOT = Path(__file__).resolve().parents[1]
# Spelt wrong on purpose: the README shows what the job answers to a misspelt setting.
MISSPELT_ON_PURPOSE = {"GRPO_TRIAN__MAX_STEPS"}
# A GRPO_ name that is whole: not the start of an f-string (`GRPO_TRAIN__{name}`) or a prefix (`GRPO_REWARDS__`)
NAME = re.compile(r"(?<![A-Za-z0-9_])GRPO_[A-Za-z0-9_.:]*[A-Za-z0-9](?![A-Za-z0-9_{.:])")


def _spelt_names() -> dict[str, set[str]]:
    files = [*(ROOT / "grpo_job").rglob("*.py"), ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
             *(ROOT / "examples").glob("*"), *(ROOT / "k8s").rglob("*.yaml"), ROOT / "Dockerfile"]
    found: dict[str, set[str]] = {}
    for f in files:
        if f.is_file():
            for name in NAME.findall(f.read_text(encoding="utf-8")):
                found.setdefault(name, set()).add(str(f.relative_to(ROOT)))
    return found


def test_the_scan_finds_the_names_users_are_told_to_set():
    names = _spelt_names()
    assert {"GRPO_STORE__URI", "GRPO_TRAIN__MAX_STEPS", "GRPO_RUN_ID"} <= set(names)


@pytest.mark.parametrize("prefix", ["grpo_job/", "README.md", "docs/", "examples/", "k8s/", "Dockerfile"])
def test_every_grpo_name_spelt_for_users_is_a_setting(prefix):
    """A message or document that says `set GRPO_X` must name a variable the job reads as a setting (or a
    reserved one): a stale name sends the user to a variable that is then refused as unknown."""
    spelt = _spelt_names()
    names = {n for n, where in spelt.items() if any(w.startswith(prefix) for w in where)}
    stale = {n: sorted(spelt[n]) for n in sorted(names - MISSPELT_ON_PURPOSE) if unknown_env_names({n: "x"})}
    assert not stale, stale


# A path into the repository as documents spell it: `grpo_job/settings/root.py`, `tests/gpu_device.sh`
REPO_PATH = re.compile(r"(?<![\w./-])((?:grpo_job|tests|bench|examples|k8s|docs|requirements)/[\w./-]*\w)")
# Paths that are made, not shipped: what a bench writes when it runs, the overlay a user copies.
MADE_NOT_SHIPPED = ("bench/results/", "k8s/overlays/mine")


def test_every_repository_path_a_document_names_exists():
    """Documents, manifests and docstrings that point at a file send users and maintainers there (new-user
    trial: `grpo_job/settings/sections.py` and `job/errors.py` named files that were gone)."""
    files = [*(ROOT / "grpo_job").rglob("*.py"), ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
             *(ROOT / "examples").glob("*"), *(ROOT / "k8s").rglob("*.yaml"), ROOT / "Dockerfile", ROOT / "Makefile",
             ROOT / "entrypoint.py", *(ROOT / "bench").glob("*.py")]
    missing = {}
    for f in files:
        if f.is_file():
            for path in REPO_PATH.findall(f.read_text(encoding="utf-8")):
                if not (ROOT / path).exists() and not path.startswith(MADE_NOT_SHIPPED):
                    missing.setdefault(path, []).append(str(f.relative_to(ROOT)))
    assert len(files) > 40 and not missing, missing
