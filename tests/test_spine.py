"""The run's spine: what a run decides once is decided once (grpo_job/context.py), and the package has the
shape its README describes (no import circles, no module over 400 lines).

The CPU run is `entrypoint.py run` as a subprocess, with a `sitecustomize` on its PYTHONPATH that counts
every call of `grpo_job.rewards.build_all` and `grpo_job.training.engines.pick_engine` in each process
(the job re-executes itself after `train`, same pid; the sitecustomize counts in the new image too)."""

import ast
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.job_env import job_env

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "grpo_job"
MAX_MODULE_LINES = 400

SPY = '''
import json, os, uuid

_IMAGE = uuid.uuid4().hex  # one per interpreter start: the re-exec after train keeps the pid, not this

def _count(module, name):
    real = getattr(module, name)

    def counted(*args, **kwargs):
        with open(os.environ["SPINE_SPY_LOG"], "a") as f:
            f.write(json.dumps({"process": _IMAGE, "call": name}) + "\\n")
        return real(*args, **kwargs)

    setattr(module, name, counted)

from grpo_job import rewards
from grpo_job.training import engines

_count(rewards, "build_all")
_count(engines, "pick_engine")
'''


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        rel = f.relative_to(ROOT).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every grpo_job module `name` imports: at the top, inside functions and under TYPE_CHECKING alike
    (a circle is one whichever side imports lazily)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for t in targets:
            while t not in modules and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in modules and t != name and t != "grpo_job":
                found.add(t)
    return found


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _circles(graph) == []


def test_the_circle_finder_finds_one():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_stage_bodies_never_import_the_runner():
    modules = _modules()
    importers = sorted(name for name, path in modules.items()
                       if "grpo_job.pipeline" in _imports(name, path, modules))
    assert importers == ["grpo_job.cli"]


@pytest.mark.slow
def test_a_cpu_run_builds_the_rewards_once_and_picks_the_engine_once(tmp_path):
    """Every stage that needs the rewards or the engine (prepare_data's dry call, the preflight, the
    evaluations, train and its guards) reads them from the run's context: one build, one pick per process."""
    spy_dir = tmp_path / "spy"
    spy_dir.mkdir()
    (spy_dir / "sitecustomize.py").write_text(SPY)
    log = tmp_path / "calls.jsonl"
    env = job_env(tmp_path, SPINE_SPY_LOG=str(log), PYTHONPATH=f"{spy_dir}{os.pathsep}{ROOT}")
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "run", "--config", str(ROOT / "examples/smoke.yaml"),
           f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'work'}", "--log_format=json",
           "--train.max_steps=1", "--train.save_steps=1", "--train.num_generations=2",
           "--train.per_device_train_batch_size=2", "--train.max_completion_length=8", "--health.preflight_samples=2",
           "--evaluation.cpu_samples=2", "--evaluation.max_new_tokens=8", "--report.enabled=false",
           "--export.merge=false"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1500)
    assert r.returncode == 0, r.stderr[-4000:]
    stages = {json.loads(line).get("stage") for line in r.stderr.splitlines() if line.startswith("{")}
    assert {"prepare_data", "reward_preflight", "evaluate_base", "train", "evaluate_trained"} <= stages
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    per_process = Counter((c["process"], c["call"]) for c in calls)
    processes = list(dict.fromkeys(c["process"] for c in calls))  # in the order they started
    assert len(processes) == 2, calls  # the run, then the process the job re-executes after train
    assert all(n == 1 for n in per_process.values()), per_process
    first = processes[0]
    assert per_process[(first, "build_all")] == 1 and per_process[(first, "pick_engine")] == 1


def test_the_readme_layout_names_every_module_and_nothing_else():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"\b([a-z0-9_]+\.py)\b", block))
    named_packages = set(re.findall(r"\b([a-z_]+)/", block))
    files = {p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"} | {"entrypoint.py"}
    packages = {p.parent.name for p in PACKAGE.rglob("__init__.py")}
    assert files - named == set(), "modules the README's layout does not name"
    assert named - files == set(), "names in the README's layout that are not modules"
    assert packages - named_packages == set(), "packages the README's layout does not name"
