"""Reward health: a preflight before training and guards during it.

- `preflight` (its own stage, before training): sample a few completions from the base model and
  call every reward on them the way TRL does. A reward that raises, returns the wrong number of
  scores or a non-number fails the run at once (exit 2) with the completion that broke it, before
  any GPU time goes into training. Every reward 0 on every sample is legal but means no learning
  signal: a loud warning shows examples.
- `Guards` (a TrainerCallback during training): every group with zero reward variance for K logged
  steps in a row (TRL's `frac_reward_zero_std` = 1), one reward exactly 0 for K steps, or a NaN/inf
  loss or grad norm -> the trainer saves a checkpoint (which the store callback uploads), stops, and
  the run exits with code 3 (`TrainingUnhealthy`) and a message saying what to change.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from grpo_job import data
from grpo_job import rewards as R
from grpo_job.errors import SettingsError, TrainingUnhealthy

if TYPE_CHECKING:
    from grpo_job.pipeline import RunContext
    from grpo_job.settings import JobSettings

log = logging.getLogger(__name__)

_SHOWN = 600  # characters of an offending completion shown in an error


def _show(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


# ---------------------------------------------------------------- preflight
def check_rewards(reward_names: list[str], rows: list[dict], completions: list[str],
                  completion_ids: list[list[int]] | None = None) -> dict[str, list[float]]:
    """Call every reward on (prompt row, completion) pairs as TRL's GRPOTrainer calls it; return the
    scores by reward name. Raises SettingsError naming the reward and showing the completion that
    broke it when a reward raises, returns the wrong number of scores, or returns a non-number."""
    n = len(completions)
    ids = completion_ids if completion_ids is not None else [[] for _ in completions]
    columns = [k for k in rows[0] if k not in ("prompt", "completion", "completion_ids")] if rows else []

    def call(func: Any, idx: list[int]) -> Any:
        kwargs = {k: [rows[i][k] for i in idx] for k in columns}
        return func(
            prompts=[rows[i]["prompt"] for i in idx],
            # conversational prompts: TRL passes each completion as a list of messages
            completions=[[{"role": "assistant", "content": completions[i]}] for i in idx],
            completion_ids=[ids[i] for i in idx],
            trainer_state=None, log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None,
            **kwargs,
        )

    def problem(func: Any, idx: list[int]) -> str | None:
        try:
            out = call(func, idx)
        except Exception as e:  # any error of user code is the finding, reported below
            return f"raised {type(e).__name__}: {e}"
        try:
            got = len(out)
        except TypeError:
            return f"returned {type(out).__name__}, not a list of floats"
        if got != len(idx):
            return f"returned {got} scores for {len(idx)} completions (one per completion is required)"
        bad = [v for v in out if v is not None and not isinstance(v, (int, float))]
        if bad:
            return f"returned a non-number {bad[0]!r} ({type(bad[0]).__name__})"
        return None

    scores: dict[str, list[float]] = {}
    for name in reward_names:
        func = R.resolve(name)
        batch_problem = problem(func, list(range(n)))
        if batch_problem is None:
            scores[name] = [math.nan if v is None else float(v) for v in call(func, list(range(n)))]
            continue
        # Find the completion that breaks it: one at a time, the first that fails on its own.
        culprit = next((i for i in range(n) if problem(func, [i]) is not None), None)
        if culprit is None:
            detail = f"on a batch of {n} completions (each one alone is fine); the first was {_show(completions[0])}"
        else:
            detail = f"on completion #{culprit} {problem(func, [culprit])}: {_show(completions[culprit])}"
            if "answer" in rows[culprit]:
                detail += f" (reference answer {rows[culprit]['answer']!r})"
        raise SettingsError(
            f"reward {name!r} {batch_problem}, {detail}. A reward must return one float (or None) per completion "
            f"and never raise on odd model output; fix the function or remove it from GRPO_REWARDS"
        )
    return scores


def preflight(ctx: RunContext) -> dict[str, Any]:
    """Stage body: sample `health.preflight_samples` completions from the base model, score them with
    every reward, fail on a broken reward, warn loudly when every score is 0."""
    from grpo_job import evaluate

    s = ctx.settings
    rows = data.from_jsonl(ctx.store.read_text("data/train.jsonl"))[: s.health.preflight_samples]
    model, tok = evaluate.load_model(s, ctx, adapter=False)
    try:
        gens = evaluate.generate(model, tok, [r["prompt"] for r in rows], s.train.max_completion_length,
                                 batch_size=len(rows), sample=True, temperature=s.train.temperature, seed=s.train.seed)
    finally:
        evaluate.free(model)
    texts = [g[0] for g in gens]
    scores = check_rewards(list(s.rewards), rows, texts, [g[1] for g in gens])
    means = {name: sum(v for v in vals if not math.isnan(v)) / len(vals) for name, vals in scores.items()}
    all_zero = all(v == 0 for vals in scores.values() for v in vals)
    if all_zero:
        examples = "\n".join(f"  [{i}] {_show(t)}" for i, t in enumerate(texts[:3]))
        log.warning(
            "REWARD PREFLIGHT: every reward (%s) scored 0 on all %d sampled completions of the base model. With no "
            "reward variance GRPO has no learning signal and the zero-variance guard will stop the run. Add a "
            "partial-credit reward (partial_format), check that the system prompt asks for the format the rewards "
            "check, or use a larger model. Examples:\n%s", ", ".join(scores), len(texts), examples,
        )
    log.info("reward preflight on %d completions: %s", len(texts), " ".join(f"{k}={v:.3f}" for k, v in means.items()))
    return {"samples": len(texts), "reward_means": means, "all_zero": all_zero, "example": texts[0] if texts else None}


# ---------------------------------------------------------------- guards during training
def _func_name(reward: str) -> str:
    """The name TRL logs a reward under (`rewards/<function name>/mean`)."""
    return getattr(R.resolve(reward), "__name__", reward)


class Guards:
    """The guard rules over logged steps, without any trainer: `observe` returns a stop message or None."""

    def __init__(self, s: JobSettings):
        self.h = s.health
        self.watched = {_func_name(r): r for r in s.rewards if r not in self.h.zero_reward_exempt}
        self.zero_std_run = 0
        self.zero_reward_run = dict.fromkeys(self.watched, 0)

    def observe(self, step: int, logs: dict[str, Any]) -> str | None:
        h = self.h
        if h.stop_on_nan:
            for key in ("loss", "grad_norm"):
                v = logs.get(key)
                if isinstance(v, (int, float)) and not math.isfinite(v):
                    return (f"{key} is {v} at step {step}: training diverged. Lower GRPO_TRAIN__LEARNING_RATE or "
                            "GRPO_TRAIN__MAX_GRAD_NORM, use bf16 rather than fp16; the checkpoint saved at this step "
                            "may hold broken weights, so start again with a new GRPO_RUN_ID")
        if "frac_reward_zero_std" in logs:
            self.zero_std_run = self.zero_std_run + 1 if logs["frac_reward_zero_std"] >= 1.0 - 1e-9 else 0
            if h.zero_std_steps and self.zero_std_run >= h.zero_std_steps:
                return (f"every group had zero reward variance for {self.zero_std_run} logged steps in a row (up to "
                        f"step {step}, frac_reward_zero_std=1): all advantages are 0, so nothing is learned. Add a "
                        "partial-credit reward (partial_format), raise GRPO_TRAIN__TEMPERATURE or "
                        "GRPO_TRAIN__NUM_GENERATIONS, check the system prompt asks for the rewarded format; or set "
                        "GRPO_HEALTH__ZERO_STD_STEPS=0 to disable this guard")
        for func, name in self.watched.items():
            v = logs.get(f"rewards/{func}/mean")
            if v is None:
                continue
            self.zero_reward_run[func] = self.zero_reward_run[func] + 1 if v == 0 else 0
            if h.zero_reward_steps and self.zero_reward_run[func] >= h.zero_reward_steps:
                return (f"reward {name!r} was exactly 0 for {self.zero_reward_run[func]} logged steps in a row (up to "
                        f"step {step}): it never matches what the model writes. Check the reward against sampled "
                        f"completions, or list it in GRPO_HEALTH__ZERO_REWARD_EXEMPT if it is expected to stay 0 for "
                        "a while (GRPO_HEALTH__ZERO_REWARD_STEPS=0 disables this guard)")
        return None


def callbacks(ctx: RunContext) -> list[Any]:
    """The guard as a TrainerCallback. Add it after the store's checkpoint callback: it raises in
    `on_train_end`, after the checkpoint it asked for was saved and handed to the store."""
    from transformers import TrainerCallback

    guards = Guards(ctx.settings)

    class HealthGuard(TrainerCallback):
        stopped: str | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.stopped or not logs:
                return
            msg = guards.observe(state.global_step, logs)
            if msg:
                self.stopped = msg
                log.error("health guard: %s; saving a checkpoint and stopping", msg, extra={"step": state.global_step})
                control.should_save = True
                control.should_training_stop = True

        def on_train_end(self, args, state, control, **kwargs):
            if self.stopped:
                raise TrainingUnhealthy(f"training stopped by a health guard at step {state.global_step} "
                                        f"(checkpoint-{state.global_step} saved): {self.stopped}")

    return [HealthGuard()]


def oom_message(exc: BaseException) -> str | None:
    """A message naming the settings to lower when `exc` is a CUDA or vLLM out-of-memory error; else None."""
    text = f"{type(exc).__name__}: {exc}"
    markers = ("OutOfMemoryError", "CUDA out of memory", "out of memory", "No available memory for the cache blocks",
               "CUBLAS_STATUS_ALLOC_FAILED")
    if not any(m.lower() in text.lower() for m in markers):
        return None
    first = text.splitlines()[0][:300]
    if "cache blocks" in text:  # vLLM: its share is too small to hold the weights plus any KV cache
        return (f"vLLM has no GPU memory left for its KV cache ({first}). Raise GRPO_MODEL__GPU_MEMORY_UTILIZATION "
                "or lower GRPO_MODEL__MAX_SEQ_LENGTH; if training then runs out of memory, lower "
                "GRPO_TRAIN__NUM_GENERATIONS, GRPO_TRAIN__MAX_COMPLETION_LENGTH or GRPO_TRAIN__PER_DEVICE_TRAIN_BATCH_SIZE")
    return (f"the GPU ran out of memory ({first}). Lower one of: GRPO_MODEL__GPU_MEMORY_UTILIZATION (vLLM's share; "
            "training uses the rest), GRPO_TRAIN__NUM_GENERATIONS, GRPO_TRAIN__MAX_COMPLETION_LENGTH, "
            "GRPO_TRAIN__PER_DEVICE_TRAIN_BATCH_SIZE (raise GRPO_TRAIN__GRADIENT_ACCUMULATION_STEPS to keep the batch), "
            "or enable GRPO_MODEL__LOAD_IN_4BIT. Checkpoints already in the store are kept")


# ---------------------------------------------------------------- the columns the rewards ask for
def check_reward_columns(reward_names: list[str], columns: list[str]) -> None:
    """Every keyword a reward requires (a parameter without a default, other than TRL's own arguments) is a
    column of the prepared rows. Raises SettingsError naming the reward, the column and the columns there are."""
    import inspect

    trl_args = set(data.TRL_REWARD_ARGS) | {"prompts"}
    for name in reward_names:
        try:
            params = inspect.signature(R.resolve(name)).parameters.values()
        except (TypeError, ValueError):  # a builtin or C callable without a signature: the preflight calls it
            continue
        needed = [p.name for p in params if p.default is inspect.Parameter.empty
                  and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in trl_args]
        missing = [c for c in needed if c not in columns]
        if missing:
            raise SettingsError(
                f"reward {name!r} needs the dataset column(s) {missing}, but the prepared rows have {columns}; "
                "TRL passes each column to the rewards under its own name (the reference answer as `answer`). "
                "Point GRPO_DATA__PATH at data with that column, or fix the reward's parameter names"
            )
