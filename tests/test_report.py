"""The report: plots and report.md from per-step metrics and before/after evaluation, both on
synthetic metrics (fast) and after a real short CPU run of every stage (slow)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_job.artifacts import report
from grpo_job.store import LocalStore
from tests.job_env import job_env

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def _records(n):
    return [{"step": i, "reward": 0.1 * i, "rewards/format_reward/mean": 0.05 * i, "rewards/correctness_reward/mean": 0.0,
             "completions/mean_length": 100 + i, "completions/min_length": 50, "completions/max_length": 200,
             "completions/clipped_ratio": 0.5, "loss": 0.01, "step_time": 1.0} for i in range(1, n + 1)]


def test_plots_and_markdown_from_synthetic_metrics(tmp_path):
    store = LocalStore(tmp_path / "run1")
    store.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in _records(40))
                     + json.dumps({"step": 40, "train_runtime": 12.0}) + "\n")
    store.write_text("eval/base.json", json.dumps({"n": 10, "accuracy": 0.1, "format_rate": 0.0, "mean_length": 120.0}))
    store.write_text("eval/trained.json", json.dumps({"n": 10, "accuracy": 0.3, "format_rate": 0.6, "mean_length": 90.0}))
    store.write_text("settings.json", json.dumps({"fingerprint": "abc", "settings": {
        "model": {"name_or_path": "m"}, "rewards": {"format": 0.5}, "train": {"max_steps": 40, "learning_rate": 5e-6}}}))
    paths = report.plot(report.step_records(store), tmp_path / "out")
    assert [p.name for p in paths] == list(report.PLOTS)
    assert all(p.read_bytes().startswith(PNG) and p.stat().st_size > 10_000 for p in paths)
    md = report.report_markdown(store, image_prefix="report/")
    assert "| accuracy | 0.100 | 0.300 | 0.200 |" in md
    assert "| format compliance (whole format) | 0.000 | 0.600 | 0.600 |" in md
    assert "| mean completion length (tokens) | 120.0 | 90.0 | -30.0 |" in md
    # reward change over training: means of the first and last 10 logged steps
    assert "| reward | 0.5500 | 3.5500 |" in md
    assert "The run stopped" not in md  # said only of a run a guard stopped (test_health.py)
    # TRL's metric names get the settings' names beside them, as the evaluation table uses those
    named = report.report_markdown(store, settings_names={"format_reward": "format"})
    assert "| rewards/format_reward/mean (format) | " in named and "| rewards/correctness_reward/mean | " in named
    assert "![rewards per step](report/rewards.png)" in md and "| max_steps | 40 |" in md


def test_a_short_run_s_training_table_shows_every_logged_step(tmp_path):
    """A 3-step run's table gave the first and the last step only: the middle one was hidden (trial)."""
    store = LocalStore(tmp_path / "run")
    store.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in _records(3)))
    md = report.report_markdown(store)
    assert "| metric | step 1 | step 2 | step 3 |" in md and "|---|---|---|---|" in md
    assert "| reward | 0.1000 | 0.2000 | 0.3000 |" in md and "first 1" not in md
    store.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in _records(report.SHORT_RUN_STEPS + 1)))
    assert "| metric | first 1 | last 1 |" in report.report_markdown(store)


def test_the_plots_of_a_short_run_mark_whole_steps_only(tmp_path, monkeypatch):
    """A 4-step run's plots read 1.5, 2.5 on the step axis (trial T)."""
    import matplotlib.pyplot as plt

    ticks, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (ticks.append(fig.axes[0].get_xticks()), close(fig)))
    report.plot(_records(4), tmp_path)
    assert len(ticks) == 2 and all(len(t) and all(float(v).is_integer() for v in t) for t in ticks), ticks


@pytest.mark.parametrize(("base", "trained", "want", "absent"), [
    # the rewards first (their weighted total, then each), then the <answer> numbers where measured
    ({"n": 4, "reward": 0.5, "rewards": {"code": 0.25}, "accuracy": 0.1, "mean_length": 50.0},
     {"n": 4, "reward": 1.0, "rewards": {"code": 0.75}, "accuracy": 0.4, "mean_length": 40.0},
     ["| reward (weighted total) | 0.500 | 1.000 | 0.500 |", "| reward code | 0.250 | 0.750 | 0.500 |",
      "| accuracy | 0.100 | 0.400 | 0.300 |", "accuracy uses the correctness reward's extraction"], ["| format compliance"]),
    # a task in another format: no <answer> numbers, no sentence about them
    ({"n": 4, "reward": 0.0, "rewards": {"json_schema": 0.0}, "mean_length": 50.0},
     {"n": 4, "reward": 0.5, "rewards": {"json_schema": 0.5}, "mean_length": 40.0},
     ["| reward json_schema | 0.000 | 0.500 | 0.500 |"], ["| accuracy", "<answer>` block", "| has an <answer>"]),
    # a reward that scored nothing, and an evaluation written before the rewards were measured
    ({"n": 4, "accuracy": 0.2, "mean_length": 50.0},
     {"n": 4, "reward": 0.0, "rewards": {"mine": None}, "accuracy": 0.3, "mean_length": 40.0},
     ["| reward (weighted total) | – | 0.000 | – |", "| accuracy | 0.200 | 0.300 | 0.100 |"], ["| reward mine"]),
])
def test_the_evaluation_table_shows_what_was_measured(tmp_path, base, trained, want, absent):
    store = LocalStore(tmp_path / "run")
    store.write_text("eval/base.json", json.dumps(base))
    store.write_text("eval/trained.json", json.dumps(trained))
    md = report.report_markdown(store)
    assert all(line in md for line in want), md
    assert not any(line in md for line in absent), md


@pytest.mark.parametrize("train, want", [
    ({"steps": 100, "seconds": 175.8, "resumed_from": None}, "Training: 100 optimizer steps in 175.8 s."),
    ({"steps": 3, "seconds": 198.3, "resumed_from": 2},
     "Training: 3 optimizer steps. The attempt that finished resumed from checkpoint-2 and ran step 3 in 198.3 s; "
     "the earlier attempts' time is not counted."),
    ({"steps": 12, "seconds": 60.9, "resumed_from": 4}, "resumed from checkpoint-4 and ran steps 5-12 in 60.9 s"),
])
def test_the_training_line_times_only_what_it_timed(train, want):
    """After a resume the train stage's seconds are the last attempt's (trial: "3 optimizer steps in 198.3 s")."""
    assert want in report.training_line(train) and report.training_line(train).startswith("Training: ")


def test_step_timer_gives_step_time_tokens_per_second_and_eta(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(report.time, "monotonic", lambda: now[0])
    t = report.StepTimer()
    t.start(0)
    now[0] = 110.0
    assert t.tick(2, 10, 1000) == {"step_time": 5.0, "eta_s": 40.0}
    now[0] = 130.0
    assert t.tick(4, 10, 3000) == {"step_time": 10.0, "tokens_per_s": 100.0, "eta_s": 45.0}
    assert report.fmt_duration(45) == "0m45s" and report.fmt_duration(3725) == "1h02m"


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """One short real run of every stage on CPU (2 GRPO steps), shared by the tests below."""
    tmp = tmp_path_factory.mktemp("report-run")
    work = tmp_path_factory.getbasetemp() / "grpo-work"  # model cache shared with the other test modules
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "run", "--config", str(ROOT / "examples" / "smoke.yaml"),
           f"--store.uri={tmp / 'runs'}", f"--work_dir={work}", "--run_id=rep", "--log_format=json",
           "--train.max_steps=2", "--train.save_steps=2", "--export.merge=false", "--health.preflight_samples=2",
           "--evaluation.max_samples=2", "--evaluation.max_new_tokens=16",
           '--rewards={"partial_format": 0.5, "tests.reward_fixtures:length_reward": 1.0}']
    env = job_env(tmp)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1500)
    assert r.returncode == 0, r.stderr[-4000:]
    return r, LocalStore(tmp / "runs" / "rep")


@pytest.mark.slow
def test_cpu_run_writes_report_with_plots_and_before_after(cpu_run):
    _, store = cpu_run
    for stage in ("reward_preflight", "evaluate_base", "train", "evaluate_trained", "report"):
        assert store.exists(f"stages/{stage}.json"), stage
    for name in report.PLOTS:
        assert store.read_bytes(f"report/{name}").startswith(PNG)
    md = store.read_text("report/report.md")
    assert "## Evaluation before and after training" in md and "| accuracy |" in md
    train = json.loads(store.read_text("stages/train.json"))
    assert f"Training: {train['steps']} optimizer steps in {train['seconds']} s." in md
    base, trained = json.loads(store.read_text("eval/base.json")), json.loads(store.read_text("eval/trained.json"))
    assert base["n"] == trained["n"] == 2
    assert f"| mean completion length (tokens) | {base['mean_length']:.1f} | {trained['mean_length']:.1f} |" in md
    assert "length_reward" in md and "![rewards per step](rewards.png)" in md
    assert "| rewards/partial_format_reward/mean (partial_format) |" in md  # the settings' name beside TRL's
    assert "| reward partial_format |" in md  # the evaluation table's row of the same reward
    # the model card gets the same markdown with its own image paths
    assert "![rewards per step](report/rewards.png)" in report.report_markdown(store, image_prefix="report/")


@pytest.mark.slow
def test_cpu_run_keeps_per_step_metrics_with_timing_and_logs_eta(cpu_run):
    r, store = cpu_run
    records = report.step_records(store)
    assert [rec["step"] for rec in records] == [1, 2]
    for rec in records:
        assert {"reward", "rewards/length_reward/mean", "completions/mean_length", "loss", "step_time", "eta_s"} <= set(rec)
        assert math.isfinite(rec["step_time"]) and rec["step_time"] > 0
    assert "tokens_per_s" in records[1] and records[1]["eta_s"] == 0
    lines = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    step_lines = [ln["msg"] for ln in lines if ln["msg"].startswith("step 1/2")]
    assert step_lines and " eta " in step_lines[0]
    # the trainer's closing summary has its own numbers, not an empty "step 2/2 " (operator trial)
    summary = [ln["msg"] for ln in lines if ln["msg"].startswith("step 2/2") and "train_runtime=" in ln["msg"]]
    assert len(summary) == 1 and "reward=" not in summary[0], [ln["msg"] for ln in lines if ln["msg"].startswith("step")]
