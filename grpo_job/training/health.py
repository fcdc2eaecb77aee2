"""Reward health: a preflight before training, and guards during it.

- `preflight` (its own stage, before training): sample a few completions from the base model (through
  vLLM where evaluation uses it, else transformers) and call every reward on them the way TRL does
  (`grpo_job.rewards.calls`). A reward that raises, returns the wrong number of scores or a non-number
  fails the run at once (exit 2) with the completion that broke it, before any GPU time goes into
  training. Every reward 0 on every sample is legal but means no learning signal: a loud warning shows
  examples.
- `Guards` (a TrainerCallback during training): every group with zero reward variance for K logged
  steps in a row (TRL's `frac_reward_zero_std` = 1), one reward exactly 0 for K steps, or a NaN/inf
  loss or grad norm -> the trainer saves a checkpoint (which the store callback uploads), stops, and
  the run exits with code 3 (`TrainingUnhealthy`) and a message saying what to change.

The dry call on synthetic completions (`check`, prepare_data) is `grpo_job.rewards.calls.dry_call`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from grpo_job import chat, data
from grpo_job import rewards as R
from grpo_job.errors import TrainingUnhealthy
from grpo_job.rewards import calls

if TYPE_CHECKING:
    from grpo_job.context import RunContext
    from grpo_job.settings import JobSettings

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- preflight
def weighted(settings_rewards: Mapping[str, Any]) -> list[str]:
    """The rewards that train (TRL's `reward_weights` entry not 0), by settings name. A weight-0 reward is
    logged only (TRL's advice for a metric to watch, trl#3018): neither the guards nor the preflight's
    variance test count it as learning signal."""
    return [name for name, entry in settings_rewards.items() if R.weight(entry) != 0]


def reward_report(scores: dict[str, list[float]]) -> dict[str, dict[str, float | bool | None]]:
    """Per reward: `scored` (share of completions not skipped with None), `mean` and `std` of the
    scored ones (None when none was scored), `varies` (two scored completions differ)."""
    out: dict[str, dict[str, float | bool | None]] = {}
    for name, vals in scores.items():
        got = [v for v in vals if not math.isnan(v)]
        mean = sum(got) / len(got) if got else None
        std = math.sqrt(sum((v - mean) ** 2 for v in got) / len(got)) if mean is not None else None
        out[name] = {"scored": len(got) / len(vals) if vals else 0.0, "mean": mean, "std": std,
                     "varies": len(set(got)) > 1}
    return out


def partial_credit(s: JobSettings) -> str | None:
    """The partial-credit reward to add when groups get no variance, None when one is there: `partial_format`
    for a task in the `<answer>` format; a task in another format needs one of its own (partial_format would
    need prompts that ask for `<answer>`, which `check` then asks for; trial)."""
    if not chat.answer_format_readers(s):
        return ("a reward of your own that gives partial credit in your task's format (for a well-formed answer, "
                "per test passed, per field right)")
    return None if "partial_format" in s.rewards else "a partial-credit reward (partial_format)"


def advice(s: JobSettings, report: dict[str, dict[str, float | bool | None]], clipped: float,
           instruction: str = "GRPO_DATA__SYSTEM_PROMPT") -> str:
    """What to change when no reward varies over the sampled completions (`clipped`: share of them cut
    off at `train.max_completion_length`; `instruction`: where the prompts' instruction is set,
    `chat.instruction_place`)."""
    tips = []
    if clipped >= 0.5:
        tips.append(f"{clipped:.0%} of the completions were cut off at train.max_completion_length="
                    f"{s.train.max_completion_length} tokens before they finished, so no answer is seen: raise "
                    "GRPO_TRAIN__MAX_COMPLETION_LENGTH (and GRPO_MODEL__MAX_SEQ_LENGTH with it), or ask for a shorter "
                    f"answer in {instruction}")
    if tip := partial_credit(s):
        tips.append(f"add {tip} to GRPO_REWARDS")
    # a user's reward that gives every completion one nonzero score does not read the completion (trial)
    same = [f"{name} ({r['mean']:g})" for name, r in report.items()
            if ":" in chat.reward_name(name, s.rewards.get(name)) and r["scored"] and not r["varies"] and r["mean"]]
    if same:
        tips.append(f"{', '.join(same)} gave every completion the same score: a reward must tell completions apart "
                    "(check that it reads `completions`)")
    skipped = [name for name, r in report.items() if r["scored"] == 0]
    if skipped:
        tips.append(f"{skipped} returned None for every completion (nothing scored): check the dataset columns they read")
    tips.append(f"check that {instruction} ask{'s' if instruction.startswith('GRPO_') else ''} for the format the "
                "rewards check, or use a larger model")
    return "; ".join(tips)


def preflight(ctx: RunContext) -> dict[str, Any]:
    """Stage body: sample `health.preflight_samples` completions from the base model, score them with
    every reward, fail on a broken reward, report each reward (share scored, mean, variance) and warn
    loudly, saying what to change, when no reward varies."""
    from grpo_job import evaluate

    s = ctx.settings
    rows = data.from_jsonl(ctx.store.read_text(ctx.keys.TRAIN_ROWS))[: s.health.preflight_samples]
    prompts = [r["prompt"] for r in rows]
    if evaluate.use_vllm():  # as the trainer samples, and without a second copy of the model in this process
        gens = evaluate.generate_vllm(s, ctx, prompts, s.train.max_completion_length, adapter=False,
                                      temperature=s.train.temperature)
    else:
        model, tok = evaluate.load_model(s, ctx, adapter=False)
        try:
            gens = evaluate.generate(model, tok, prompts, s.train.max_completion_length, batch_size=len(rows),
                                     sample=True, temperature=s.train.temperature, seed=s.train.seed,
                                     render=evaluate.prompt_renderer(s, ctx))
        finally:
            evaluate.free(model)
    texts = [g[0] for g in gens]
    instruction = chat.instruction_place(s, rows)
    # the rewards get the prompts as TRL passes them (text for plain prompts, messages for chat ones)
    rows = evaluate.prompt_renderer(s, ctx).for_trainer(rows)
    scores = calls.check_rewards(ctx.rewards, rows, texts, [g[1] for g in gens],
                           time_limit=s.health.reward_time_limit)
    report = reward_report(scores)
    clipped = sum(len(g[1]) >= s.train.max_completion_length for g in gens) / max(len(gens), 1)
    verdict = signal_verdict(scores, report, weighted(s.rewards))
    all_zero, no_variance = verdict["all_zero"], verdict["no_variance"]
    for name, r in report.items():
        stats = "nothing scored" if r["mean"] is None else f"mean {r['mean']:.3f}  std {r['std']:.3f}"
        log.info("reward preflight: %-24s scored %5.1f%%  %s  %s%s", name, 100 * r["scored"], stats,
                 "varies" if r["varies"] else "NO VARIANCE",
                 "" if name in verdict["trained"] else "  (weight 0: logged only)")
    if no_variance and texts:
        examples = "\n".join(f"  [{i}] {calls.shown(t)}" for i, t in enumerate(texts[:3]))
        what = "scored 0 on" if all_zero else "gave the same score to"
        log.warning(
            "REWARD PREFLIGHT: every weighted reward (%s) %s all %d sampled completions of the base model. With no "
            "reward variance GRPO has no learning signal; %s. To change: %s. Examples:\n%s",
            ", ".join(verdict["trained"]) or "none", what, len(texts), guard_outlook(s), advice(s, report, clipped, instruction),
            examples,
        )
    if texts and (note := masked_share_note(s, clipped)):
        log.warning("REWARD PREFLIGHT: %s", note)
    if texts and (note := bare_answer_note(s, rows, texts, instruction)):
        log.warning("REWARD PREFLIGHT: %s", note)
    return {"samples": len(texts), "reward_means": {k: r["mean"] for k, r in report.items()}, "rewards": report,
            "clipped_rate": clipped, "all_zero": all_zero, "no_variance": no_variance,
            "example": texts[0] if texts else None}


def bare_answer_note(s: JobSettings, rows: list[dict], texts: list[str],
                     instruction: str = "GRPO_DATA__SYSTEM_PROMPT") -> str | None:
    """When the correctness reward is set and sampled completions are the reference answer itself, without the
    `<answer>` block it reads: what scores them 0, and what to change (trial: a sentiment task answered
    `neutral` for `neutral` and scored 0 before and after training, with nothing said)."""
    if "correctness" not in s.rewards:
        return None
    from grpo_job import answers

    bare = [t for r, t in zip(rows, texts, strict=True) if R.extract_answer(t) is None and len(t.strip()) <= 200
            and answers.verify(t.strip(), str(r.get(data.ANSWER, "")), s.data.answer_type)]
    if not bare:
        return None
    where = ("data.system_prompt [GRPO_DATA__SYSTEM_PROMPT] (the default asks for it)"
             if instruction.startswith("GRPO_") else instruction)
    return (f"{len(bare)} of {len(texts)} sampled completions are the reference answer without an <answer> block "
            f"(e.g. {calls.shown(bare[0])}), and the correctness reward reads only <answer> blocks, so it scores them 0; "
            f"ask for the format in {where}, or score bare answers with a reward of your own")


def masked_share_note(s: JobSettings, clipped: float) -> str | None:
    """With `mask_truncated_completions` TRL leaves a cut-off completion out of the loss: when the preflight saw
    half or more of its samples cut off (`clipped`, a share), most of each batch would train nothing."""
    from grpo_job.settings import environment

    masked = environment.grpo_config_extra(s.train.extra).get("mask_truncated_completions")  # "on" -> True
    if masked is not True or clipped < 0.5:
        return None
    return (f"{clipped:.0%} of the sampled completions were cut off at train.max_completion_length="
            f"{s.train.max_completion_length}, and train.extra.mask_truncated_completions leaves those out of the loss, "
            "so most of each batch would not train; raise train.max_completion_length [GRPO_TRAIN__MAX_COMPLETION_LENGTH], "
            "or turn the masking off "
            "until the model writes shorter answers")


def guard_outlook(s: JobSettings) -> str:
    """What the zero-variance guard will do about a run whose rewards never vary, in these settings."""
    n, steps = s.health.zero_std_steps, s.train.max_steps
    if n == 0:
        return "the zero-variance guard is off (health.zero_std_steps=0), so the run trains on nothing to the end"
    if steps < n:
        return (f"its {steps} steps end before the zero-variance guard would stop it (after {n} such steps in a "
                "row, health.zero_std_steps), so it trains on nothing to the end")
    return f"the zero-variance guard will stop the run (exit 3) after {n} such steps in a row (health.zero_std_steps)"


def signal_verdict(scores: dict[str, list[float]], report: dict[str, dict[str, float | bool | None]],
                   trained: list[str]) -> dict[str, Any]:
    """Whether the sampled completions give GRPO a learning signal, judged on the rewards that train
    (`trained`: weight not 0) alone; a log-only reward that varies is no signal. `all_zero`: every trained
    reward scored 0 on every completion; `no_variance`: none of them varies."""
    trained = [name for name in trained if name in scores]
    return {"trained": trained,
            "all_zero": all(v == 0 for name in trained for v in scores[name]),
            "no_variance": not any(report[name]["varies"] for name in trained)}


# ---------------------------------------------------------------- guards during training
class Guards:
    """The guard rules over logged steps, without any trainer: `observe` returns a stop message or None."""

    def __init__(self, s: JobSettings, log_names: Mapping[str, str]):
        """`log_names`: settings name -> the name TRL logs the reward under (`RunContext.reward_log_names`)."""
        self.h = s.health
        self.partial = partial_credit(s)
        # weight-0 rewards are logged only (not trained on): one that stays 0 is no reason to stop
        trained = set(weighted(s.rewards))
        self.watched = {func: r for r, func in log_names.items()
                        if r not in self.h.zero_reward_exempt and r in trained}
        self.zero_std_run = 0
        self.zero_reward_run = dict.fromkeys(self.watched, 0)
        self.last_scored: int | None = None

    def observe(self, step: int, logs: dict[str, Any]) -> str | None:
        """The runs are counted in optimizer steps: rewards are logged once per generation, which feeds
        `steps_per_generation` steps (with `logging_steps` > 1, once per that many)."""
        h = self.h
        span = 1
        if "frac_reward_zero_std" in logs or any(f"rewards/{f}/mean" in logs for f in self.watched):
            span = max(step - self.last_scored, 1) if self.last_scored is not None else 1
            self.last_scored = step
        if h.stop_on_nan:
            for key in ("loss", "grad_norm"):
                v = logs.get(key)
                if isinstance(v, (int, float)) and not math.isfinite(v):
                    return (f"{key} is {v} at step {step}: training diverged. Lower GRPO_TRAIN__LEARNING_RATE or "
                            "GRPO_TRAIN__MAX_GRAD_NORM, use bf16 rather than fp16; the checkpoint saved at this step "
                            "may hold broken weights, so start again with a new GRPO_RUN_ID")
        if "frac_reward_zero_std" in logs:
            self.zero_std_run = self.zero_std_run + span if logs["frac_reward_zero_std"] >= 1.0 - 1e-9 else 0
            if h.zero_std_steps and self.zero_std_run >= h.zero_std_steps:
                return (f"every group had zero reward variance for {self.zero_std_run} steps in a row (up to "
                        f"step {step}, frac_reward_zero_std=1): all advantages are 0, so nothing is learned. Add "
                        f"{self.partial or 'a partial-credit reward'} to GRPO_REWARDS, raise GRPO_TRAIN__TEMPERATURE or "
                        "GRPO_TRAIN__NUM_GENERATIONS, check the system prompt asks for the rewarded format; or set "
                        "GRPO_HEALTH__ZERO_STD_STEPS=0 to disable this guard")
        for func, name in self.watched.items():
            v = logs.get(f"rewards/{func}/mean")
            if v is None:
                continue
            self.zero_reward_run[func] = self.zero_reward_run[func] + span if v == 0 else 0
            if h.zero_reward_steps and self.zero_reward_run[func] >= h.zero_reward_steps:
                return (f"reward {name!r} was exactly 0 for {self.zero_reward_run[func]} steps in a row (up to "
                        f"step {step}): it never matches what the model writes. Check the reward against sampled "
                        f"completions, or list it in GRPO_HEALTH__ZERO_REWARD_EXEMPT if it is expected to stay 0 for "
                        "a while (GRPO_HEALTH__ZERO_REWARD_STEPS=0 disables this guard)")
        return None


def callbacks(ctx: RunContext) -> list[Any]:
    """The guard as a TrainerCallback. Add it after the store's checkpoint callback: it raises in
    `on_train_end`, after the checkpoint it asked for was saved and handed to the store."""
    from transformers import TrainerCallback

    guards = Guards(ctx.settings, ctx.reward_log_names)

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
