"""Cross-field rules of the settings: small named checks mirroring TRL's and the engines' invariants.

Each rule takes the whole `JobSettings` (typed as the `Settings` protocol) and returns the problems it
finds, worded as TRL words its own errors: what is wrong, why, what to set. `problems` runs them all
(every broken rule is reported at once); `warnings` lists legal settings that are usually wrong. Rules
read the values alone, never the machine (that is `grpo_job.settings.environment`).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from typing import Protocol

from grpo_job.settings.data import DataSettings, eval_fraction_applies
from grpo_job.settings.evaluation import EvaluationSettings, HealthSettings
from grpo_job.settings.model import LoraSettings, ModelSettings
from grpo_job.settings.outputs import StopSettings
from grpo_job.settings.rewards import RewardValue, trl_reward_problems, trl_reward_warnings
from grpo_job.settings.training import DistributedSettings, TrainSettings


class Settings(Protocol):
    """What the rules read of the root settings (`JobSettings`), named here from the sections alone: the
    root model runs these rules when it validates, so this module must not import it."""

    model: ModelSettings
    lora: LoraSettings
    data: DataSettings
    rewards: dict[str, RewardValue]
    train: TrainSettings
    stop: StopSettings
    evaluation: EvaluationSettings
    health: HealthSettings
    distributed: DistributedSettings

_defer_world: contextvars.ContextVar[bool] = contextvars.ContextVar("grpo_defer_world_checks", default=False)


@contextlib.contextmanager
def deferred_world_checks() -> Iterator[None]:
    """Settings loaded inside skip the rules that depend on the number of processes: for
    `entrypoint.py launch`, which needs the settings to know how many it will start (and then
    loads them again, checking everything)."""
    token = _defer_world.set(True)
    try:
        yield
    finally:
        _defer_world.reset(token)


def world_checks_deferred() -> bool:
    return _defer_world.get()


def generation_batch_holds_groups(s: Settings) -> list[str]:
    # TRL: generation_batch_size = per_device_train_batch_size * steps_per_generation * num_processes,
    # with steps_per_generation defaulting to gradient_accumulation_steps (either may be set in
    # train.extra, not both); it must hold whole groups.
    if world_checks_deferred():
        return []
    t, world = s.train, s.train.resolved_world_size()
    per_step = t.per_device_train_batch_size * world
    if "generation_batch_size" in t.extra and t.steps_per_generation != "auto":
        return [f"train.extra.generation_batch_size and train.steps_per_generation={t.steps_per_generation} are "
                "alternatives in GRPOConfig; keep one of them (GRPO_TRAIN__STEPS_PER_GENERATION=auto defers to "
                "generation_batch_size)"]
    given = t.extra.get("generation_batch_size")
    if isinstance(given, str):  # a JSON text ("10", "1e1"): GRPOConfig gets its number (settings.environment)
        try:
            given = float(given)
        except ValueError:
            pass  # `check` names the type
    if isinstance(given, float) and given.is_integer():  # `1e1`, `10.0`: GRPOConfig gets 10 (settings.environment)
        given = int(given)
    if isinstance(given, int) and not isinstance(given, bool):
        generation_batch, how = given, "train.extra.generation_batch_size"
        if generation_batch % per_step:
            return [f"{how} ({generation_batch}) must be a multiple of per_device_train_batch_size x world_size "
                    f"({per_step}), because GRPOConfig splits it into whole steps; set it to a multiple of {per_step}"]
    else:
        # `auto` picks a multiple of gradient_accumulation_steps: whole groups there mean whole groups in it
        own = isinstance(t.steps_per_generation, int)
        steps = t.steps_per_generation if own else t.gradient_accumulation_steps
        generation_batch = per_step * steps
        how = (f"{t.per_device_train_batch_size} per_device_train_batch_size x {steps} "
               f"{'steps_per_generation' if own else 'gradient_accumulation_steps'} "
               f"x {world} world_size = {generation_batch}")
    if generation_batch % t.num_generations == 0:
        return []
    return [
        f"train: the generation batch ({how}) must be divisible by num_generations ({t.num_generations}), "
        f"because every prompt's group of completions must fit in one batch; set "
        f"GRPO_TRAIN__PER_DEVICE_TRAIN_BATCH_SIZE to a multiple of {t.num_generations}"
    ]


# GRPOConfig arguments the job sets itself, and the setting that controls each.
JOB_SETS = {
    "output_dir": "work_dir", "reward_weights": "rewards", "save_strategy": "train.save_steps",
    "save_total_limit": "store.keep_last", "report_to": "report.report_to", "disable_tqdm": None,
    "log_completions": None, "resume_from_checkpoint": "run_id (a run resumes by itself)",
    "use_vllm": "model.engine", "vllm_mode": "distributed.vllm_mode",
    "vllm_gpu_memory_utilization": "model.gpu_memory_utilization", "vllm_max_model_length": "model.max_seq_length",
    "vllm_tensor_parallel_size": "distributed.vllm_tensor_parallel_size",
    "vllm_enable_sleep_mode": "distributed.vllm_enable_sleep_mode", "vllm_server_host": "distributed.vllm_server_host",
    "vllm_server_port": "distributed.vllm_server_port", "vllm_server_timeout": "distributed.vllm_server_timeout",
    "fsdp": "distributed.strategy", "fsdp_config": "distributed.strategy", "deepspeed": "distributed.strategy",
}


def extra_is_not_a_setting(s: Settings) -> list[str]:
    """`train.extra` is for GRPOConfig arguments that have no setting of their own."""
    own = set(type(s.train).model_fields) - {"extra", "world_size"}
    out = []
    for name in s.train.extra:
        if name in own:
            out.append(f"train.extra sets {name!r}, which is a setting of its own: set train.{name} "
                       f"(GRPO_TRAIN__{name.upper()}) instead")
        elif name in JOB_SETS and JOB_SETS[name] is None:  # off whatever the settings (second trial)
            out.append(f"train.extra sets {name!r}, which the job keeps off: TRL would print completion tables to "
                       "the log stream (not JSON); the preflight and the report show completions. Remove it")
        elif name in JOB_SETS:
            out.append(f"train.extra sets {name!r}, which the job sets itself from {JOB_SETS[name]}: "
                       f"remove it from GRPO_TRAIN__EXTRA and change {JOB_SETS[name]} instead")
        elif name in _ONLY_VALUE and str(s.train.extra[name]).lower() not in (_ONLY_VALUE[name][0], "none"):
            value, why = _ONLY_VALUE[name]
            out.append(f"train.extra sets {name}={s.train.extra[name]!r}: {why}; remove it (TRL's default is {value!r})")
    return out


# GRPOConfig arguments with one value the job works with, and why (new-user trial: both passed `check`)
_ONLY_VALUE = {
    "eval_strategy": ("no", "the job evaluates in stages of its own (evaluation.*) and hands TRL's trainer no eval "
                      "dataset, so transformers' Trainer would refuse to start the train stage"),
    "logging_strategy": ("steps", "the job's metrics, its health guards and the report read TRL's per-step logs, "
                         "which another strategy turns off (train.extra.logging_steps sets how often)"),
}


def _reads_false(value: object) -> bool:
    """false as the job converts it for TRL (pydantic's lax bool, settings.environment): False, 0, or the text
    false/no/off/f/n/0 in any case."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(bool).validate_python(value.strip() if isinstance(value, str) else value) is False
    except ValidationError:
        return False


# generation_kwargs keys TRL sets itself from GRPOConfig (trl/trainer/grpo_trainer.py, vllm_generation.py:
# `generation_kwargs.update(args.generation_kwargs)` puts the user's over them): overridden there, the batch or
# the loss no longer matches what TRL assumes.
_GENERATION_KWARGS_OF_TRL = {
    "temperature": ("train.temperature (GRPO_TRAIN__TEMPERATURE)", "TRL divides the training logits by "
                    "train.temperature; a sampling temperature of its own makes the policy ratio compare "
                    "log-probs of two different distributions"),
    "n": ("train.num_generations (GRPO_TRAIN__NUM_GENERATIONS)", "TRL samples each prompt's group itself, one "
          "completion per copy of the prompt; more would not match the batch"),
    "num_return_sequences": ("train.num_generations (GRPO_TRAIN__NUM_GENERATIONS)", "TRL samples each prompt's "
                             "group itself, one completion per copy of the prompt; more would not match the batch"),
    "max_tokens": ("train.max_completion_length (GRPO_TRAIN__MAX_COMPLETION_LENGTH)", "the job fits prompts and "
                   "completions into model.max_seq_length by that setting"),
    "max_new_tokens": ("train.max_completion_length (GRPO_TRAIN__MAX_COMPLETION_LENGTH)", "the job fits prompts "
                       "and completions into model.max_seq_length by that setting"),
    **{key: (f"train.extra.{key} (GRPO_TRAIN__EXTRA__{key.upper()})", f"TRL passes GRPOConfig's {key} to the "
             "sampler, and two values would disagree in silence; there `check` also checks its range")
       for key in ("top_p", "top_k", "min_p", "repetition_penalty")},
}


def generation_kwargs_leave_trl_its_own(s: Settings) -> list[str]:
    """`train.extra.generation_kwargs` goes to vLLM's SamplingParams (or transformers' GenerationConfig) over
    what TRL sets from GRPOConfig; the keys that would break TRL's batch or loss are refused."""
    kwargs = s.train.extra.get("generation_kwargs")
    if not isinstance(kwargs, dict):
        return []
    out = [f"train.extra.generation_kwargs sets {key!r}, which TRL sets itself from {setting}: {why}; set "
           f"{setting.split(' ')[0]} and remove {key!r} from generation_kwargs"
           for key, (setting, why) in _GENERATION_KWARGS_OF_TRL.items() if key in kwargs]
    if "do_sample" in kwargs and _reads_false(kwargs["do_sample"]):
        out.append("train.extra.generation_kwargs sets do_sample=false: every completion of a group would be the same "
                   "greedy one, so no group has reward variance and GRPO learns nothing; remove 'do_sample'")
    if "logprobs" in kwargs and kwargs["logprobs"] is None:
        out.append("train.extra.generation_kwargs sets logprobs=null: TRL (1.15) reads the sampled token's "
                   "log-prob of every vLLM completion for its importance-sampling correction and fails at the first "
                   "generation step without them; remove 'logprobs' from generation_kwargs")
    if kwargs.get("stop") and "detokenize" in kwargs and _reads_false(kwargs["detokenize"]):
        out.append("train.extra.generation_kwargs sets stop strings with detokenize=false: vLLM matches stop strings "
                   "on the text and refuses them without it; remove 'detokenize' (the job turns the text off only "
                   "where no stop strings are set)")
    return out


def lengths_fit_sequence(s: Settings) -> list[str]:
    t = s.train
    if t.max_prompt_length + t.max_completion_length <= s.model.max_seq_length:
        return []
    return [
        f"train.max_prompt_length ({t.max_prompt_length}) + train.max_completion_length "
        f"({t.max_completion_length}) exceeds model.max_seq_length ({s.model.max_seq_length}), so "
        f"completions would be cut off; raise GRPO_MODEL__MAX_SEQ_LENGTH to at least "
        f"{t.max_prompt_length + t.max_completion_length} or lower the lengths"
    ]


def unsloth_has_no_lora_dropout(s: Settings) -> list[str]:
    if s.model.engine == "unsloth" and s.lora.lora_dropout:
        return [
            "lora.lora_dropout must be 0 with the unsloth engine (its fused LoRA kernels have no dropout); "
            "set GRPO_LORA__LORA_DROPOUT=0"
        ]
    return []


def processes_fit_engine(s: Settings) -> list[str]:
    """TRL's and the engines' rules for several processes, checked before any GPU is touched."""
    if world_checks_deferred():
        return []
    d, world, problems = s.distributed, s.train.resolved_world_size(), []
    if world > 1 and s.model.engine == "unsloth":
        problems.append(
            f"model.engine=unsloth runs one process on one GPU, but this launch has {world} processes; "
            "set GRPO_MODEL__ENGINE=trl (or auto, which picks trl for multi-GPU runs)"
        )
    if d.vllm_mode == "colocate" and world % d.vllm_tensor_parallel_size:
        problems.append(
            f"distributed.vllm_tensor_parallel_size ({d.vllm_tensor_parallel_size}) must divide the number of "
            f"training processes ({world}), because each group of that many processes shares one vLLM engine; "
            f"set GRPO_DISTRIBUTED__VLLM_TENSOR_PARALLEL_SIZE to a divisor of {world}"
        )
    return problems


def sharding_fits_model(s: Settings) -> list[str]:
    d, problems = s.distributed, []
    if d.strategy != "ddp" and s.model.engine == "unsloth":
        problems.append(f"distributed.strategy={d.strategy} is not available with model.engine=unsloth; set "
                        "GRPO_MODEL__ENGINE=trl")
    if d.strategy != "ddp" and s.model.load_in_4bit:
        problems.append(
            f"distributed.strategy={d.strategy} shards the base model, which cannot be done with 4-bit "
            "(bitsandbytes) weights here; set GRPO_MODEL__LOAD_IN_4BIT=false, or GRPO_DISTRIBUTED__STRATEGY=ddp "
            "when the 4-bit model fits one GPU"
        )
    return problems


def exempt_rewards_exist(s: Settings) -> list[str]:
    unknown = [r for r in s.health.zero_reward_exempt if r not in s.rewards]
    if unknown:
        return [f"health.zero_reward_exempt names {unknown}, which are not in rewards {list(s.rewards)}"]
    return []


def _weight(entry: object) -> float:
    """A `rewards` value's weight (TRL's `reward_weights` entry): a number, or an entry's `weight`."""
    return float(getattr(entry, "weight", entry))  # type: ignore[arg-type]


def some_reward_trains(s: Settings) -> list[str]:
    """At least one reward has a weight other than 0: weight-0 rewards are logged, not trained on."""
    if s.rewards and all(_weight(e) == 0 for e in s.rewards.values()):
        return [f"every reward has weight 0 ({', '.join(f'rewards.{n}' for n in s.rewards)}): TRL logs a weight-0 "
                "reward but trains on none of them, so nothing would be learned; give at least one reward a weight "
                "other than 0 (GRPO_REWARDS, e.g. {\"correctness\": 2.0})"]
    return []


def one_answer_type(s: Settings) -> list[str]:
    """The correctness reward compares answers as `data.answer_type`, as the evaluation and the data check
    do; an `answer_type` of its own in its entry would train on one comparison and report another."""
    entry = s.rewards.get("correctness")
    own = getattr(entry, "kwargs", {}).get("answer_type")
    # a value that is no answer type at all is the reward's argument check's to name (settings.environment)
    if own in ("auto", "math", "exact") and own != s.data.answer_type:
        return [f"rewards.correctness.answer_type={own!r} differs from data.answer_type={s.data.answer_type!r}: the "
                "evaluation and the data check compare answers as data.answer_type, so training and the reported "
                f"accuracy would score the same answer differently; set GRPO_DATA__ANSWER_TYPE={own} and leave "
                "answer_type out of the reward's entry"]
    return []


def trl_rewards_can_score(s: Settings) -> list[str]:
    """TRL's parameterised rewards with arguments under which they score nothing, or fail (settings.rewards)."""
    return trl_reward_problems(s.rewards, s.train.max_completion_length)


def warmup_steps_of(s: Settings) -> int:
    """The warm-up steps transformers makes of `train.warmup_steps` (a float below 1 is a share of
    `max_steps`, rounded up; `get_warmup_steps`). Linear warm-up trains step 0 at learning rate 0, so with
    `max_steps`=1 any warm-up leaves no step at a non-zero rate."""
    return warmup_steps_for(s.train.warmup_steps, s.train.max_steps)


def warmup_steps_for(warmup_steps: float, max_steps: int) -> int:
    """`warmup_steps_of` on plain values (a saved run's settings, read without building Settings)."""
    return int(warmup_steps) if warmup_steps >= 1 else math.ceil(max_steps * warmup_steps)


RULES: tuple[Callable[[Settings], list[str]], ...] = (
    generation_batch_holds_groups,
    extra_is_not_a_setting,
    generation_kwargs_leave_trl_its_own,
    lengths_fit_sequence,
    unsloth_has_no_lora_dropout,
    processes_fit_engine,
    sharding_fits_model,
    exempt_rewards_exist,
    some_reward_trains,
    one_answer_type,
    trl_rewards_can_score,
)


def problems(s: Settings) -> list[str]:
    """Every broken cross-field rule, one message each."""
    return [p for rule in RULES for p in rule(s)]


def _holds_out_nothing(s: Settings) -> bool:
    """No held-out rows: `eval_fraction` 0 where it applies (`data.eval_fraction_applies`)."""
    return eval_fraction_applies(s.data) and s.data.eval_fraction == 0


def warnings(s: Settings) -> list[str]:
    """Known traps that are legal but usually wrong: logged by `check` and `run`, never fatal."""
    out = []
    lr = s.train.learning_rate
    if lr > 5e-4:
        out.append(
            f"train.learning_rate={lr:g} is high even for a LoRA: GRPO at such rates tends to spike, then collapse "
            "the reward; 1e-4 is the measured default (docs/benchmarks.md)"
        )
    elif lr < 2e-5:
        out.append(
            f"train.learning_rate={lr:g} is a full-fine-tuning rate; a LoRA barely moves at it (Qwen 0.5B, GSM8K, 100 "
            "steps: 1e-5 gained 6 points of accuracy, 1e-4 gained 21; docs/benchmarks.md); 1e-4 is the default"
        )
    if s.train.num_generations < 4:
        out.append(
            f"train.num_generations={s.train.num_generations} is a small group: the group-mean baseline "
            "is noisy and many groups have zero reward variance (no signal); 8 is the recipe's value"
        )
    if s.model.gpu_memory_utilization > 0.9:
        out.append(
            f"model.gpu_memory_utilization={s.model.gpu_memory_utilization} leaves under 10% of the GPU "
            "for training next to vLLM, which usually ends in an out-of-memory error; 0.5-0.7 is typical"
        )
    if s.distributed.strategy == "fsdp" and s.distributed.vllm_mode == "colocate":
        out.append(
            "distributed.strategy=fsdp with vllm_mode=colocate crashed in vLLM's CUDA-graph capture (illegal memory "
            "access) in the one run made so far (H100, 1 process, vLLM 0.26, TRL 1.15; docs/benchmarks.md); "
            "strategy=ddp is the proven path, vllm_mode=server keeps vLLM out of the FSDP processes"
        )
    if _holds_out_nothing(s) and s.evaluation.enabled and not s.evaluation.data_path:
        out.append(
            "data.eval_fraction=0 holds out no rows, so evaluate_base and evaluate_trained have nothing to "
            "score; set evaluation.data_path to a file of held-out rows, or evaluation.enabled=false"
        )
    out += trl_reward_warnings(s.rewards, s.train.max_completion_length, s.data.system_prompt, s.data.prompt_template)
    for name, entry in s.rewards.items():
        w = _weight(entry)
        if w == 0 and any(_weight(e) != 0 for e in s.rewards.values()):
            out.append(f"rewards.{name} has weight 0: TRL logs it (rewards/<name>/mean) but does not train on it, and "
                       "the health guards and the preflight's variance test ignore it; give it a weight to train on it")
        elif w < 0:
            out.append(f"rewards.{name} has a negative weight ({w:g}): GRPO pushes the model away from what it scores "
                       "high. Right for a penalty that scores the unwanted thing (length, repetition); if it scores "
                       "what you want, make the weight positive")
    if s.train.max_steps == 1 and warmup_steps_of(s) > 0 and s.train.lr_scheduler_type != "constant":
        out.append(f"train.warmup_steps={s.train.warmup_steps:g} with train.max_steps=1: linear warm-up trains its first "
                   "step at learning rate 0, so a 1-step run would learn nothing; the job trains it without warm-up. "
                   "Set GRPO_TRAIN__WARMUP_STEPS=0 to say so, or more steps")
    elif s.train.max_steps > 1 and warmup_steps_of(s) >= s.train.max_steps and s.train.lr_scheduler_type != "constant":
        out.append(f"train.warmup_steps={s.train.warmup_steps:g} >= train.max_steps={s.train.max_steps}: the learning "
                   f"rate never reaches train.learning_rate={s.train.learning_rate:g}; a share (0.05, 5%) scales "
                   "with max_steps (GRPO_TRAIN__WARMUP_STEPS)")
    if s.train.save_steps > s.train.max_steps:
        out.append(
            f"train.save_steps={s.train.save_steps} > train.max_steps={s.train.max_steps}: no "
            "checkpoint before the end, so a preempted run restarts from step 0"
        )
    if s.stop.grace_seconds >= 30:
        out.append(
            f"stop.grace_seconds={s.stop.grace_seconds:g}: Kubernetes kills a pod 30 s after SIGTERM unless "
            "its terminationGracePeriodSeconds is raised above this budget"
        )
    return out
