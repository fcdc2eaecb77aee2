"""What may change when a run is started again with the same run id (a resume), and what it does.

A run keeps the settings it was last started with in its store (`settings.json`). On every start the
new settings are compared with those, setting by setting:

| setting | once training began (a checkpoint or the train marker exists) |
|---|---|
| `model.name_or_path`, `model.revision`, `model.gguf_file` | may not change: exit 2 |
| `lora.r`, `lora.lora_alpha`, `lora.target_modules` (the adapter's shape) | may not change: exit 2 |
| `data.*` (the prompts were prepared from them), `rewards` | may not change: exit 2 |
| `train.max_steps` | up: training continues from the newest checkpoint, the stages after it run again; down, not below the steps already trained: training ends there (logged); below them: exit 2 |
| `train.learning_rate`, `lr_scheduler_type`, `warmup_steps` | applied from the resumed step on, and logged |
| anything else (logging, store, stop, export, hub, evaluation, report, health, other train fields) | applied, and logged; "no effect" when every stage that reads it already ran and none runs again (`READ_BY`) |

Before training began, every setting may change: the stages finished so far (data preparation,
preflight, base evaluation) are done again with the new settings. To start over after training
began, use a new run id (`GRPO_RUN_ID`) or delete the run's folder in the store.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from grpo_job.settings.rules import warmup_steps_for

# Settings (dotted paths; a section name covers every field in it) that define what a checkpoint is:
# the base model, the adapter's shape, the prompts and the rewards it was trained with.
FROZEN = (
    "model.name_or_path", "model.revision", "model.gguf_file",
    "lora.r", "lora.lora_alpha", "lora.target_modules",
    "data", "rewards",
)
# Changed on resume: the trainer applies them from the resumed step (train stage, see apply_learning_rate).
SCHEDULE = ("train.learning_rate", "train.lr_scheduler_type", "train.warmup_steps")
# The stages that read a section's settings: a change there has no effect once they all ran and none runs again.
READ_BY = {"train.": ("train",), "evaluation.": ("evaluate_base", "evaluate_trained"),
           "health.": ("reward_preflight", "train"), "report.": ("report",),
           "export.": ("merge", "export_gguf", "verify_gguf"), "hub.": ("publish",)}
# Where a run lives, how it logs: never part of a comparison (the fingerprint leaves them out too).
IGNORED = ("run_id", "log_format", "work_dir", "cache_dir", "store", "stop", "hf_token")


def flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'max_steps': 5}} -> {'train.max_steps': 5}; a dict setting (rewards, train.extra) stays whole."""
    out: dict[str, Any] = {}
    for k, v in settings.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and not prefix and k != "rewards":
            out.update(flatten(v, f"{path}."))
        else:
            out[path] = v
    return out


def field_default(path: str) -> tuple[bool, Any]:
    """(True, the JSON form of the default) of a `section.field` setting; (False, None) when the path is
    not a field with a default. Settings saved by an older version lack the fields added since: they
    ran with the behaviour that is now that field's default (e.g. data.prompt_format=auto: chat when the
    model has a template; a model without one could not be trained before)."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined, to_jsonable_python

    from grpo_job.settings import JobSettings

    section, _, name = path.partition(".")
    top = JobSettings.model_fields.get(section)
    model = top.annotation if top is not None else None
    if not name or not (isinstance(model, type) and issubclass(model, BaseModel)) or name not in model.model_fields:
        return False, None
    default = model.model_fields[name].get_default(call_default_factory=True)
    if default is PydanticUndefined:
        return False, None
    return True, to_jsonable_python(default)


def _covered(path: str, names: tuple[str, ...]) -> bool:
    return any(path == n or path.startswith(n + ".") for n in names)


@dataclass
class ResumePlan:
    """The outcome of comparing a run's saved settings with the new ones."""

    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # path -> (saved, new)
    refused: list[str] = field(default_factory=list)  # why the run cannot go on with these settings
    redo: list[str] = field(default_factory=list)  # stage markers to remove: those stages run again
    notes: list[str] = field(default_factory=list)  # what happens, for the log

    @property
    def frozen_changes(self) -> dict[str, tuple[Any, Any]]:
        return {p: c for p, c in self.changes.items() if _covered(p, FROZEN)}


def plan(saved: dict[str, Any], new: dict[str, Any], *, stage_names: list[str], done: dict[str, dict[str, Any]],
         checkpoint_steps: list[int], run_id: str) -> ResumePlan:
    """Compare `saved` and `new` (redacted settings dicts) for a run whose finished stages are `done`
    (name -> marker summary) and whose store holds complete checkpoints at `checkpoint_steps`.

    `stage_names` is every stage in order. Pure: reads nothing, writes nothing."""
    old_flat = {k: v for k, v in flatten(saved).items() if not _covered(k, IGNORED)}
    new_flat = {k: v for k, v in flatten(new).items() if not _covered(k, IGNORED)}
    # a setting added since the run was saved (e.g. data.prompt_format) ran at what is now its default
    for path in set(new_flat) - set(old_flat):
        known, default = field_default(path)
        if known:
            old_flat[path] = default
    result = ResumePlan()
    for path in sorted(set(old_flat) | set(new_flat)):
        if old_flat.get(path) != new_flat.get(path):
            result.changes[path] = (old_flat.get(path), new_flat.get(path))
    if not result.changes:
        return result
    trained = max([*checkpoint_steps, int((done.get("train") or {}).get("steps") or 0)], default=0)
    began = bool(checkpoint_steps) or "train" in done
    start_over = (f"to start over with these settings, set a new GRPO_RUN_ID (or delete run {run_id!r} from the "
                  "store); to go on, put the saved values back")
    frozen = result.frozen_changes
    if frozen and began:
        listed = "; ".join(f"{p}: {_show(a)} -> {_show(b)}" for p, (a, b) in frozen.items())
        result.refused.append(
            f"run {run_id!r} has trained {trained} step(s) with other settings that define its checkpoint ({listed}); "
            f"resuming would load that checkpoint into another model, adapter shape, data or rewards. {start_over}"
        )
    elif frozen:
        done_before_train = [n for n in stage_names[: stage_names.index("train")] if n in done]
        result.redo += done_before_train
        if done_before_train:
            result.notes.append(f"{', '.join(frozen)} changed before training began: redoing {', '.join(done_before_train)}")
    if "train.max_steps" in result.changes:
        new_max = result.changes["train.max_steps"][1]
        if isinstance(new_max, int) and new_max < trained:
            result.refused.append(
                f"train.max_steps={new_max} is below the {trained} step(s) run {run_id!r} has already trained; set "
                f"GRPO_TRAIN__MAX_STEPS to at least {trained}, or {start_over}"
            )
        elif "train" in done and isinstance(new_max, int) and new_max > trained:
            later = stage_names[stage_names.index("train"):]
            result.redo += [n for n in later if n in done and n not in result.redo]
            result.notes.append(f"train.max_steps raised to {new_max}: training continues from step {trained}; "
                                f"{', '.join(n for n in later if n in done)} run again"
                                f"{_stretched_schedule(new.get('train') or {}, trained, new_max)}")
        else:
            old_max = result.changes["train.max_steps"][0]
            result.notes.append(f"train.max_steps changed on restart: {old_max!r} -> {new_max!r} (training ends at step "
                                f"{new_max}{f'; {trained} trained so far' if began else ''})")
    for path, (a, b) in result.changes.items():
        if _covered(path, FROZEN) or path == "train.max_steps":
            continue
        readers = next((names for prefix, names in READ_BY.items() if path.startswith(prefix)), ())
        if readers and all(n in done and n not in result.redo for n in readers):
            # trial: a finished run's new learning rate was said "applied", and no stage ran
            again = ("raise train.max_steps to train on, or set a new GRPO_RUN_ID to train with it from the start"
                     if "train" in readers else f"set a new GRPO_RUN_ID to run {'them' if len(readers) > 1 else 'it'} "
                     "with it")
            how = f"no effect: {', '.join(readers)} already ran and {'do' if len(readers) > 1 else 'does'} not run again; {again}"
        else:
            how = "applied from the resumed step" if _covered(path, SCHEDULE) and began else "applied"
        result.notes.append(f"{path} changed on restart: {_show(a)} -> {_show(b)} ({how})")
    return result


def _stretched_schedule(train: dict[str, Any], trained: int, total: int) -> str:
    """`; ...` saying at what share of train.learning_rate the steps after `trained` run, when a decaying schedule
    (cosine, linear) now spans `total` steps: it ends at 0 (trial: 2 steps added to a finished 6-step run trained at
    learning rate 0 and 4e-6, with nothing said); "" for a constant schedule."""
    kind, warmup = train.get("lr_scheduler_type"), train.get("warmup_steps") or 0
    if kind not in ("cosine", "linear"):
        return ""
    warm = warmup_steps_for(warmup, total)
    progress = max(0.0, (trained - warm) / max(1, total - warm))
    share = 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else 1 - progress
    return (f"; the {kind} learning-rate schedule now spans {total} steps, so the new steps train at "
            f"{share:.0%} of train.learning_rate and less, down to 0 at step {total} (for more training at a useful "
            "rate, raise train.max_steps further or set train.lr_scheduler_type=constant)")


def _show(v: Any) -> str:
    return json.dumps(v, default=str) if isinstance(v, dict | list) else repr(v)


def apply_learning_rate(optimizer: Any, lr_scheduler: Any, learning_rate: float) -> tuple[float, float] | None:
    """After a resume the optimizer and scheduler come from the checkpoint, with its peak learning rate and the rate
    its own schedule had reached: put `learning_rate` in the peak's place, and give every group the rate of the new
    schedule (its shape comes from the new arguments already) at the resumed step. Without the second, a raised
    `max_steps` trained its first new step at the old schedule's last rate, 0 for cosine (trial). Returns (saved peak,
    new peak) when the peak changed, else None."""
    base = list(getattr(lr_scheduler, "base_lrs", []))
    if not base:
        return None
    changed = not all(abs(b - learning_rate) <= 1e-12 * max(1.0, learning_rate) for b in base)
    lambdas = getattr(lr_scheduler, "lr_lambdas", None)
    if not changed and not lambdas:  # not a LambdaLR (transformers' schedules are): its rates are its own to keep
        return None
    if changed:
        lr_scheduler.base_lrs = [learning_rate] * len(base)
    lambdas = lambdas or [lambda _: 1.0] * len(base)
    for group, lmbda, peak in zip(optimizer.param_groups, lambdas, lr_scheduler.base_lrs, strict=False):
        group["initial_lr"] = peak
        group["lr"] = peak * lmbda(lr_scheduler.last_epoch)
    lr_scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what the trainer logs for the step
    return (base[0], learning_rate) if changed else None
