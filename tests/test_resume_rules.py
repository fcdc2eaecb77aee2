"""Resume rules: which settings may change when a run starts again with the same run id (grpo_job/resume.py),
through the settings sources a Kubernetes Job uses, and one real CPU run that continues with a raised
max_steps and a changed learning rate."""

import json
import logging
from pathlib import Path

import pytest

from grpo_job import cli, errors, pipeline, resume
from grpo_job.context import open_run
from grpo_job.errors import SettingsError
from grpo_job.settings import load_settings
from grpo_job.stages import stages as all_stages
from grpo_job.store import LocalStore

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "examples" / "smoke.yaml"
NAMES = [s.name for s in all_stages()]
TRAINED = {"prepare_data": {}, "evaluate_base": {}, "train": {"steps": 4}, "evaluate_trained": {}, "report": {}}


def plan_for(change: list[str], done: dict, checkpoints: list[int]) -> resume.ResumePlan:
    saved = load_settings(SMOKE).redacted()
    new = load_settings(SMOKE, change).redacted()
    return resume.plan(saved, new, stage_names=NAMES, done=done, checkpoint_steps=checkpoints, run_id="r1")


@pytest.mark.parametrize("change, refused_fragment", [
    (["--lora.r=8"], "lora.r: 32 -> 8"),
    (["--lora.target_modules=q_proj"], "lora.target_modules"),
    (["--model.name_or_path=/models/other"], "model.name_or_path"),
    (["--data.path=builtin:arithmetic", "--data.max_samples=8"], "data.max_samples: 64 -> 8"),
    (['--rewards={"format": 1.0}'], "rewards"),
    (["--train.max_steps=3"], "train.max_steps=3 is below the 4 step(s)"),
])
def test_changes_that_would_load_the_checkpoint_into_something_else_are_refused(change, refused_fragment):
    p = plan_for(change, TRAINED, [2, 4])
    assert p.refused and refused_fragment in p.refused[0]
    assert "GRPO_RUN_ID" in p.refused[-1]  # says how to start over
    assert p.redo == []  # nothing is forgotten


def test_before_training_began_everything_may_change_and_the_early_stages_rerun():
    p = plan_for(["--lora.r=8", "--data.max_samples=32"], {"prepare_data": {}, "evaluate_base": {}}, [])
    assert p.refused == [] and p.redo == ["prepare_data", "evaluate_base"]


def test_raising_max_steps_continues_a_finished_run():
    p = plan_for(["--train.max_steps=6"], TRAINED, [2, 4])
    assert p.refused == []
    assert p.redo == ["train", "evaluate_trained", "report"]
    assert any("training continues from step 4" in n for n in p.notes)


MID_TRAINING = {"prepare_data": {}, "evaluate_base": {}}  # checkpoint-2 stored, train not done


@pytest.mark.parametrize("change, note", [
    (["--train.learning_rate=1e-5"], "train.learning_rate changed on restart: 0.0001 -> 1e-05 (applied from the resumed step)"),
    (["--train.lr_scheduler_type=constant"], "lr_scheduler_type"),
    (["--train.logging_steps=2", "--evaluation.cpu_samples=2"], "evaluation.cpu_samples changed on restart: 8 -> 2 (applied)"),
    (["--train.temperature=0.8"], "train.temperature changed on restart: 1.0 -> 0.8 (applied)"),
])
def test_other_changes_are_applied_and_logged(change, note):
    p = plan_for(change, MID_TRAINING, [2])
    assert p.refused == [] and p.redo == []
    assert any(note in n for n in p.notes), p.notes


@pytest.mark.parametrize("change, note", [
    (["--train.learning_rate=5e-5"], "train.learning_rate changed on restart: 0.0001 -> 5e-05 (no effect: train already "
                                     "ran and does not run again; raise train.max_steps to train on"),
    (["--evaluation.cpu_samples=2"], "evaluation.cpu_samples changed on restart: 8 -> 2 (no effect: evaluate_base, "
                                     "evaluate_trained already ran and do not run again; set a new GRPO_RUN_ID"),
])
def test_a_change_that_only_finished_stages_read_says_it_has_no_effect(change, note):
    """Trial: a finished run restarted with a new learning rate logged it as applied, then skipped every stage."""
    p = plan_for(change, TRAINED, [2, 4])
    assert p.refused == [] and p.redo == [] and any(note in n for n in p.notes), p.notes
    # with max_steps raised, training runs again: the rate is applied from the resumed step
    again = plan_for([*change, "--train.max_steps=6"], TRAINED, [2, 4])
    assert not any("no effect" in n for n in again.notes) or "evaluation" in change[0], again.notes


def test_raising_a_finished_run_s_max_steps_says_what_rate_the_new_steps_get():
    """Trial: 6 -> 8 steps on a finished cosine run trained steps 7-8 at learning rates 0 and 4e-6, with nothing said."""
    p = plan_for(["--train.max_steps=8"], TRAINED, [2, 4])
    note = next(n for n in p.notes if "training continues from step 4" in n)
    assert "the cosine learning-rate schedule now spans 8 steps, so the new steps train at 61% of train.learning_rate" \
        in note, note
    constant = plan_for(["--train.max_steps=8", "--train.lr_scheduler_type=constant"], TRAINED, [2, 4])
    assert not any("schedule now spans" in n for n in constant.notes), constant.notes


@pytest.mark.parametrize("change, done, checkpoints, note", [
    # lowered, not below what was trained: applied silently before (new-user trial)
    (["--train.max_steps=2"], {"prepare_data": {}}, [1], "train.max_steps changed on restart: 4 -> 2 (training ends at "
                                                       "step 2; 1 trained so far)"),
    (["--train.max_steps=9"], {"prepare_data": {}}, [], "train.max_steps changed on restart: 4 -> 9 (training ends at step 9)"),
])
def test_a_changed_max_steps_is_said(change, done, checkpoints, note):
    p = plan_for(change, done, checkpoints)
    assert p.refused == [] and note in p.notes, p.notes


def test_where_and_how_it_logs_never_count():
    p = plan_for(["--store.uri=/elsewhere", "--log_format=json", "--stop.grace_seconds=10", "--cache_dir=/c"], TRAINED, [4])
    assert p.changes == {} and p.notes == []


def _trained_cosine(lr: float, warmup: int, total: int, steps: int):
    """An optimizer and its cosine schedule (transformers') after `steps` steps."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=total)
    for _ in range(steps):
        opt.step()
        sched.step()
    return opt, sched


def test_apply_learning_rate_rescales_the_restored_schedule():
    opt, sched = _trained_cosine(5e-6, warmup=2, total=10, steps=4)
    factor = opt.param_groups[0]["lr"] / 5e-6
    assert resume.apply_learning_rate(opt, sched, 5e-6) is None  # unchanged: untouched
    assert resume.apply_learning_rate(opt, sched, 1e-5) == (5e-6, 1e-5)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5 * factor)
    opt.step()
    sched.step()  # the schedule goes on from the new peak
    assert sched.get_last_lr()[0] == pytest.approx(1e-5 * sched.lr_lambdas[0](5))


def test_a_raised_max_steps_trains_its_first_new_step_at_the_new_schedule_s_rate():
    """Trial: 10 -> 12 steps on a finished cosine run; step 11 trained at learning rate 0 (the optimizer kept the old
    schedule's last rate), step 12 at 1.7% of the peak."""
    from transformers import get_cosine_schedule_with_warmup

    opt, old = _trained_cosine(1e-4, warmup=1, total=10, steps=10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    new = get_cosine_schedule_with_warmup(opt, num_warmup_steps=1, num_training_steps=12)
    new.load_state_dict(old.state_dict())  # as the trainer resumes: the checkpoint's state, the new arguments' shape
    assert resume.apply_learning_rate(opt, new, 1e-4) is None  # the peak is the same
    want = 1e-4 * new.lr_lambdas[0](10)
    assert want > 0 and opt.param_groups[0]["lr"] == pytest.approx(want) and new.get_last_lr()[0] == pytest.approx(want)
    # ... as the run's own note says (resume.plan: "train at 8% of train.learning_rate")
    assert want / 1e-4 == pytest.approx(0.08, abs=0.005)


@pytest.fixture
def clean_env(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith("GRPO_"):
            monkeypatch.delenv(k)


def test_check_refuses_a_changed_lora_shape_from_env_vars(tmp_path, monkeypatch, clean_env, capsys):
    """As a Kubernetes Job restarts: the same run id, a ConfigMap edited between the two pods."""
    for k, v in {"GRPO_CONFIG": str(SMOKE), "GRPO_STORE__URI": str(tmp_path / "runs"), "GRPO_RUN_ID": "job-1"}.items():
        monkeypatch.setenv(k, v)
    first = load_settings()
    ctx = open_run(first)
    ctx.store.write_text("settings.json", json.dumps({"fingerprint": first.fingerprint(), "settings": first.redacted()}))
    ctx.store.write_text("stages/train.json", json.dumps({"steps": 4}))
    monkeypatch.setenv("GRPO_LORA__R", "16")
    assert cli.main(["check"]) == errors.EXIT_INVALID
    err = capsys.readouterr()
    assert "lora.r: 32 -> 16" in err.out + err.err and "GRPO_RUN_ID" in err.out + err.err
    assert ctx.store.exists("stages/train.json")  # nothing saved is lost
    monkeypatch.setenv("GRPO_LORA__R", "32")
    monkeypatch.setenv("GRPO_TRAIN__MAX_STEPS", "8")
    assert cli.main(["check"]) == errors.EXIT_OK
    assert "training continues from step 4" in capsys.readouterr().out


@pytest.mark.slow
def test_raised_max_steps_continues_a_finished_run_with_the_new_learning_rate(tmp_path, caplog):
    base = [f"--store.uri={tmp_path / 'runs'}", "--run_id=grow", f"--work_dir={tmp_path / 'work'}",
            "--train.max_steps=1", "--train.save_steps=1", "--data.max_samples=8", "--train.max_completion_length=8"]
    only = [s for s in all_stages() if s.name in ("prepare_data", "train")]
    first = pipeline.run(load_settings(SMOKE, base), only)
    assert first["train"]["steps"] == 1
    store = LocalStore(tmp_path / "runs" / "grow")
    caplog.set_level(logging.INFO)
    grown = load_settings(SMOKE, [*base, "--train.max_steps=2", "--train.learning_rate=1e-5"])
    second = pipeline.run(grown, only)
    assert second["train"]["steps"] == 2 and second["train"]["resumed_from"] == 1
    text = caplog.text
    assert "training continues from step 1" in text
    assert "resumed from checkpoint-1" in text and "peak 0.0001 -> 1e-05, applied from step 1" in text
    assert json.loads(store.read_text("settings.json"))["settings"]["train"]["max_steps"] == 2
    # a changed adapter shape now stops before anything is loaded, and keeps what is there
    with pytest.raises(SettingsError, match="lora.r: 32 -> 8"):
        pipeline.run(load_settings(SMOKE, [*base, "--train.max_steps=2", "--lora.r=8"]), only)
    assert store.exists("stages/train.json") and store.exists("checkpoints/checkpoint-2/manifest.json")


def test_check_says_which_checkpoint_training_resumes_from(tmp_path, monkeypatch, clean_env, capsys):
    """A restarted pod: the plan named no checkpoint (new-user trial); now the newest complete one."""
    from test_checkpoints import fake_trainer_checkpoint

    from grpo_job.store import checkpoints

    for k, v in {"GRPO_CONFIG": str(SMOKE), "GRPO_STORE__URI": str(tmp_path / "runs"), "GRPO_RUN_ID": "job-2",
                 "GRPO_LOG_FORMAT": "text"}.items():
        monkeypatch.setenv(k, v)
    ctx = open_run(load_settings())
    for step in (1, 2):
        checkpoints.publish(ctx.store, fake_trainer_checkpoint(tmp_path / "out", step), step, keep_last=2)
    ctx.store.write_text(f"{checkpoints.checkpoint_prefix(3)}/adapter_model.safetensors", "no manifest: incomplete")
    assert cli.main(["check"]) == errors.EXIT_OK
    assert "training resumes from checkpoint-2" in capsys.readouterr().out
