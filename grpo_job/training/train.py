"""The train stage: GRPO on the prepared prompts with TRL's GRPOTrainer, whichever engine built
the model; checkpoints mirrored to the run store every `save_steps` (and every `save_minutes`);
resume from the newest complete checkpoint in the store.

SIGTERM during a step that cannot finish in the grace budget interrupts the step while it generates
(stopping.StepInterrupted, raised before the optimizer update; one process only) and saves the last
finished step with the trainer's own checkpoint writer, so the restart redoes only that step."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpo_job import data, distributed, machine, models, stopping
from grpo_job import resume as resume_rules
from grpo_job import rewards as reward_registry
from grpo_job.artifacts import report
from grpo_job.errors import JobError, SettingsError, StoppedEarly
from grpo_job.rewards import limits
from grpo_job.settings import JobSettings, environment
from grpo_job.settings.rules import warmup_steps_of
from grpo_job.store import checkpoints
from grpo_job.training import engines, health

if TYPE_CHECKING:
    from grpo_job.context import RunContext

log = logging.getLogger(__name__)

# Settings of ours that are not GRPOConfig arguments.
_NOT_GRPO_ARGS = {"max_prompt_length", "world_size", "save_minutes", "steps_per_generation"}


def grpo_config_kwargs(s: JobSettings, output_dir: Path) -> dict[str, Any]:
    """GRPOConfig arguments from the settings; the field names are GRPOConfig's own."""
    kwargs = s.train.model_dump(exclude=_NOT_GRPO_ARGS | {"extra"})
    # any other GRPOConfig argument, converted to its type (names and values checked by settings.environment)
    kwargs.update(environment.grpo_config_extra(s.train.extra))
    kwargs.update(
        output_dir=str(output_dir),
        reward_weights=[reward_registry.weight(v) for v in s.rewards.values()],
        save_strategy="steps",
        save_total_limit=1,  # the store keeps the history; locally only the newest is needed
        report_to=s.report.report_to or "none",
        # the job's own line per step (step/total, rewards, ETA) is the progress in both log formats: the trainer's bar
        # beside it printed each step's metrics a second time and tangled with the log lines (trial T)
        disable_tqdm=True,
        log_completions=False,
    )
    if kwargs.get("warmup_steps") and (s.train.max_steps == 1 or (s.train.warmup_steps < 1 and warmup_steps_of(s) == 1)):
        # linear warm-up trains step 0 at learning rate 0: a 1-step run would learn nothing (rules.warnings says so),
        # and a share that rounds to one step (5% of up to 20) is no warm-up, only a first step that learns nothing
        # (trial: step 1 of 3 at learning rate 0)
        kwargs["warmup_steps"] = 0
    return kwargs


def drop_long_prompts(rows: list[dict], render: Any, max_len: int) -> list[dict]:
    """Rows whose prompt, as the trainer tokenizes it (`render`: `grpo_job.chat.PromptRenderer`, with the
    trainer's chat_template_kwargs), has at most `max_len` tokens; the others dropped with a warning."""
    kept = [r for r in rows if (n := render.count(r["prompt"])) is None or n <= max_len]
    if len(kept) < len(rows):
        log.warning("dropped %d of %d prompts longer than train.max_prompt_length=%d tokens",
                    len(rows) - len(kept), len(rows), max_len)
    return kept


def _callbacks(ctx: RunContext, metrics_path: Path, publisher: checkpoints.BackgroundPublisher | None,
               stop: stopping.StopControl, resume: Path | None) -> list[Any]:
    """`publisher` is None in processes other than the main one: they never write to the store."""
    from transformers import TrainerCallback

    class StoreCheckpoints(TrainerCallback):
        """Hand each checkpoint the trainer writes to the background publisher (manifest last); an
        upload that failed for good stops training at the next step, loudly."""

        def on_save(self, args, state, control, **kwargs):
            # every process has written its part (its RNG state) before the main one snapshots it
            distributed.barrier()
            if publisher is not None:
                local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                publisher.submit(local, state.global_step, extras={ctx.keys.METRICS: metrics_path})

        def on_step_end(self, args, state, control, **kwargs):
            if publisher is not None:
                publisher.raise_if_failed()

    class StopEarly(TrainerCallback):
        """On SIGTERM or a near deadline: save at this step end, then stop (the stage exits 75). With
        several processes they decide together, so a signal to any one of them stops all at the
        same step, with one checkpoint. In one process a step may be interrupted from its start to
        its optimizer update (`on_pre_optimizer_step`), when weights and optimizer are untouched."""

        def on_step_begin(self, args, state, control, **kwargs):
            stop.step_began(interruptible=not ctx.launch.multi)

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            stop.step_updating()

        def on_step_end(self, args, state, control, **kwargs):
            stop.step_ended()
            if distributed.any_process(stop.should_stop() is not None) and stop.reason is None:
                stop.reason = "stopping on another process"
            if (reason := stop.reason) and not control.should_training_stop:
                control.should_save = control.should_training_stop = True
                log.warning("stop: %s; saving checkpoint-%d, uploading it, then exiting 75 (%.0f s left)", reason,
                            state.global_step, stop.seconds_left() or 0, extra={"step": state.global_step})

    class ResumeCheck(TrainerCallback):
        """After a resume, prove the loaded state is the saved one (step, LoRA, optimizer, scheduler)."""

        def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
            if resume is None:
                return
            # sharded state: each process holds a slice, not the saved tensors
            whole = ctx.settings.distributed.strategy == "ddp"
            facts = checkpoints.verify_resumed(resume, state.global_step, model, optimizer, lr_scheduler, tensors=whole)
            what = ("step, LoRA weights, optimizer and scheduler state equal the saved ones" if whole else
                    "step and scheduler equal the saved ones; the sharded LoRA and optimizer state were loaded by "
                    "accelerate")
            log.info("resumed from %s (%s): %s", resume.name, ctx.launch, what, extra={"resume": facts})
            # a learning rate changed since the checkpoint is applied (the checkpoint's scheduler holds the old one),
            # and the new schedule's rate at this step replaces the old schedule's (a changed max_steps)
            restored = optimizer.param_groups[0]["lr"]
            if (lr := resume_rules.apply_learning_rate(optimizer, lr_scheduler, args.learning_rate)) is not None:
                log.warning("train.learning_rate changed on resume: peak %g -> %g, applied from step %d", *lr,
                            state.global_step, extra={"step": state.global_step})
            elif abs(optimizer.param_groups[0]["lr"] - restored) > 1e-12:
                log.info("learning rate from step %d: %.3g (the schedule over train.max_steps=%d; the checkpoint's "
                         "was at %.3g)", state.global_step + 1, optimizer.param_groups[0]["lr"], args.max_steps, restored)

    class StepLog(TrainerCallback):
        """One record per logged step (with step time, tokens/s, ETA): in the job log and in metrics.jsonl."""

        timer = report.StepTimer()

        def on_train_begin(self, args, state, control, **kwargs):
            self.timer.start(state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or not state.is_world_process_zero:  # the metrics are gathered: one writer
                return
            record = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
            if "reward" in record:
                record.update(self.timer.tick(state.global_step, state.max_steps, record.get("num_tokens")))
            with metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            keys = ("loss", "reward", "reward_std", "completions/mean_length", "grad_norm", "learning_rate")
            shown = {k: record[k] for k in keys if k in record}
            shown.update({k: v for k, v in record.items() if k.startswith("rewards/") and k.endswith("/mean")})
            if not shown:  # the trainer's summary at the end (train_runtime, train_loss...): its own numbers
                shown = {k: v for k, v in record.items() if k != "step"}
            eta = f" eta {report.fmt_duration(record['eta_s'])}" if "eta_s" in record else ""
            log.info("step %d/%d %s%s", state.global_step, state.max_steps,
                     " ".join(f"{k}={v:.4g}" for k, v in shown.items()), eta, extra={"metrics": record})

    on_time = [save_on_time(ctx.settings.train.save_minutes)] if ctx.settings.train.save_minutes else []
    return [StoreCheckpoints(), StopEarly(), *on_time, ResumeCheck(), StepLog(), *health.callbacks(ctx)]


def save_on_time(minutes: float, clock: Callable[[], float] = time.monotonic) -> Any:
    """A TrainerCallback asking for a checkpoint (`control.should_save`) at the first step end at least
    `minutes` after the last save or the start of training, whatever `save_steps` says (transformers
    saves on steps or epochs only). Every process takes the main process' decision."""
    from transformers import TrainerCallback

    class SaveOnTime(TrainerCallback):
        last: float | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.last = clock()

        def on_step_end(self, args, state, control, **kwargs):
            due = self.last is not None and clock() - self.last >= minutes * 60.0
            if distributed.from_main(due) and not control.should_save:
                control.should_save = True
                log.info("checkpoint-%d: %.3g minutes since the last save (train.save_minutes=%g)", state.global_step,
                         (clock() - self.last) / 60.0, minutes, extra={"step": state.global_step})

        def on_save(self, args, state, control, **kwargs):
            self.last = clock()

    return SaveOnTime()


def run(ctx: RunContext) -> dict[str, Any]:
    stop = stopping.current()  # the run's, installed by the CLI for every stage
    own = stop is None
    if own:
        stop = stopping.from_settings(ctx.settings.stop)
        stop.install()  # from here SIGTERM only sets a flag; the grace budget is enforced
    try:
        return _train(ctx, stop)
    finally:
        stop.interruptible = False
        if own:
            stop.uninstall()
        _end_own_process_group(ctx.launch.multi)


def _end_own_process_group(multi: bool) -> None:
    """TRL's colocated vLLM opens a one-process torch.distributed group in a single-process run; left open,
    torch warns at exit from C++ (a line outside the JSON log). A launch's group is the launcher's."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or multi:
        return
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _train(ctx: RunContext, stop: stopping.StopControl) -> dict[str, Any]:
    s = ctx.settings
    launch = ctx.launch
    machine.probe()
    engine_name = ctx.engine
    log.info("engine: %s (setting %s)%s", engine_name, s.model.engine, f"; {launch}" if launch.multi else "")
    # TRL names a reward's metrics after its function (rewards/correctness_reward/mean), not its settings name
    metrics = reward_metrics(ctx.reward_log_names)
    log.info("rewards in the metrics: %s", ", ".join(f"{k} -> {v}" for k, v in metrics.items()),
             extra={"reward_metrics": metrics})
    engine = engines.get(engine_name)  # the unsloth engine imports unsloth here, before trl

    from datasets import Dataset
    from trl import GRPOConfig

    from grpo_job.training import logprobs

    output_dir = ctx.work_dir / "trainer"
    # Built before the model: it starts the process group of a multi-process launch (accelerate),
    # and ZeRO-3 must be configured before the model is loaded.
    kwargs = grpo_config_kwargs(s, output_dir)
    kwargs.update(engine.grpo_args(s))  # the engine's generation_kwargs already hold the user's on top
    args = GRPOConfig(**kwargs)
    if launch.multi and args.device.type == "cpu":
        distributed.allow_indexed_cpu_locations()
    with args.main_process_first(local=True, desc="model cache"):  # one writer per node's disk
        model_path = models.resolve(s.model, ctx.cache_dir)
    model, tok, peft_config = engine.load(model_path, s)
    if getattr(args, "use_vllm", False) and engine_name == "trl":
        args.vllm_max_model_length = engines.vllm_max_model_len(
            s.model.max_seq_length, engines.model_max_positions(model_path))

    from grpo_job import chat

    render = chat.renderer(s, chat.for_run(s.model, ctx.cache_dir))  # the prompts check and evaluation rendered
    rows = drop_long_prompts(data.from_jsonl(ctx.store.read_text(ctx.keys.TRAIN_ROWS)), render, s.train.max_prompt_length)
    rows = render.for_trainer(rows)  # plain prompts: TRL's standard text `prompt` column
    if not rows:
        raise SettingsError(f"every training prompt is longer than train.max_prompt_length={s.train.max_prompt_length} "
                            "tokens, so nothing can be trained; raise GRPO_TRAIN__MAX_PROMPT_LENGTH")
    generation = _set_steps_per_generation(args, s, model, len(rows))
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = ctx.work_dir / "metrics.jsonl"
    resume = _restore(ctx, args, output_dir, launch)
    if launch.is_main:
        if resume is not None and ctx.store.exists(ctx.keys.METRICS):
            ctx.store.get_file(ctx.keys.METRICS, metrics_path)
        elif resume is None:
            metrics_path.unlink(missing_ok=True)
    if stop.should_stop():
        raise StoppedEarly(f"stopped ({stop.reason}) before training started; nothing new to save, run again")

    publisher = (checkpoints.BackgroundPublisher(ctx.store, s.store.keep_last, ctx.work_dir / "upload-staging")
                 if launch.is_main else None)
    if publisher is not None:  # the watchdog's last words name checkpoints saved here but not in the store
        stop.unsaved_steps = publisher.unsaved
    try:
        trainer = logprobs.trainer_class(args.device.type)(  # TRL's GRPOTrainer; off-GPU, log-probs in torch
            model=model,
            processing_class=tok,
            reward_funcs=[limits.limited(name, func, s.health.reward_time_limit)  # a hang is an error naming it
                          for name, func in ctx.rewards.items()],
            args=args,
            train_dataset=Dataset.from_list(rows),
            peft_config=peft_config,
            callbacks=_callbacks(ctx, metrics_path, publisher, stop, resume),
        )
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # it prints each log dict to stdout; StepLog logs them
        try:
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        except stopping.StepInterrupted:
            save_last_finished_step(trainer, stop, output_dir)
    finally:
        # Never leave with an upload pending: even after a crash, checkpoints saved before it go to
        # the store. Raises UploadFailed if one could not be uploaded.
        if publisher is not None and not publisher.close(timeout=stop.seconds_left()):
            log.error("the uploads of checkpoint(s) %s were still pending when the stop budget ran out",
                      ", ".join(map(str, publisher.unsaved())))
    step = trainer.state.global_step
    if step == 0 and not stop.reason:
        # never mark a stage done (nor save an untrained adapter) when no optimizer step ran
        raise JobError("the trainer ran 0 steps: no adapter is saved and the train stage is not marked done; "
                       f"{len(rows)} prompts, train.max_steps={s.train.max_steps}")
    if stop.reason:
        if launch.multi:
            distributed.finish()  # nobody exits while the main process uploads (the launcher would end it)
        if step == 0:
            raise StoppedEarly(f"stopped early ({stop.reason}) during the first step: nothing to save; run again")
        raise StoppedEarly(f"stopped early ({stop.reason}) at step {step}: checkpoint-{step} is in the store with "
                           f"its manifest; run the job again to resume from it")

    adapter_dir = ctx.work_dir / "adapter"
    trainer.save_model(str(adapter_dir))  # gathers sharded weights; written by the main process
    if launch.is_main:
        tok.save_pretrained(str(adapter_dir))
        ctx.store.put_dir(adapter_dir, ctx.keys.ADAPTER)
        if metrics_path.exists():
            ctx.store.put_file(metrics_path, ctx.keys.METRICS)
    last = next((h for h in reversed(trainer.state.log_history) if "reward" in h), {})
    if launch.multi:
        del trainer, model
        distributed.finish()  # the other processes end here; the main one runs the later stages alone
    return {
        "engine": engine_name,
        "model": model_path,
        "processes": launch.world_size,
        "strategy": s.distributed.strategy if launch.multi or s.distributed.strategy != "ddp" else None,
        "steps": step,
        "resumed_from": int(resume.name.split("-")[1]) if resume else None,
        "final_reward": last.get("reward"),
        "final_metrics": {k: v for k, v in last.items() if k.startswith("rewards/")},
        "reward_metrics": metrics,
        "steps_per_generation": args.steps_per_generation,
        "generation_batch_size": args.generation_batch_size,
        "generation_plan": generation,
    }


def reward_metrics(log_names: dict[str, str]) -> dict[str, str]:
    """Settings name -> the key of its mean in metrics.jsonl and TRL's logs (`rewards/<TRL's name>/mean`)."""
    return {name: f"rewards/{logged}/mean" for name, logged in log_names.items()}


def _set_steps_per_generation(args: Any, s: JobSettings, model: Any, train_prompts: int) -> str:
    """Apply `train.steps_per_generation` (resolved by engines.steps_per_generation from the loaded model and
    the GPU) to the GRPOConfig, which was built before the model; returns the reason, also logged."""
    import torch

    vllm = bool(getattr(args, "use_vllm", False))
    gpu = torch.cuda.mem_get_info()[1] if torch.cuda.is_available() else None
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    steps, why = engines.steps_per_generation(
        s, vllm=vllm, train_prompts=train_prompts, weight_bytes=weights,
        kv_bytes_per_token=engines.kv_cache_bytes_per_token(model.config), gpu_bytes=gpu)
    if steps is not None and steps != args.steps_per_generation:
        # GRPOConfig derived generation_batch_size from steps_per_generation when it was built; keep them one
        args.steps_per_generation = steps
        args.generation_batch_size = args.per_device_train_batch_size * args.world_size * steps
    log.info("generation: steps_per_generation %d, %d completions per generation (%s)", args.steps_per_generation,
             args.generation_batch_size, why, extra={"generation": {"steps_per_generation": args.steps_per_generation,
                                                                     "generation_batch_size": args.generation_batch_size}})
    return why


def save_last_finished_step(trainer: Any, stop: stopping.StopControl, output_dir: Path) -> None:
    """After a step was interrupted before its optimizer update: write the checkpoint of the last
    finished step (`trainer.state.global_step`; weights, optimizer, scheduler as that step left them)
    with the trainer's own `_save_checkpoint`, then hand it to the callbacks' `on_save` (the store
    upload). transformers has no public "save now" outside its step loop, hence the private call.
    Nothing is written when that step is already saved, or when no step finished yet."""
    step = trainer.state.global_step
    stop.should_stop()  # records the reason (SIGTERM, or the deadline reached through the watchdog)
    # after a resume no step of this process has ended yet: its length is unknown, and a step of unknown
    # length is not begun within the grace budget (StopControl.step_fits)
    length = (f"the last step took {stop.last_step_seconds:.1f} s" if stop.last_step_seconds > 0 else
              "no step has ended in this process yet, so its length is unknown")
    log.warning("stop: %s during step %d, which cannot end within the grace budget (%s): "
                "interrupted before its update; %s", stop.reason, step + 1, length,
                f"saving checkpoint-{step}, the last finished step" if step else "no step finished, nothing to save",
                extra={"step": step})
    if step == 0 or (output_dir / f"checkpoint-{step}").exists():
        return
    trainer._save_checkpoint(trainer.model, trial=None)
    trainer.control = trainer.callback_handler.on_save(trainer.args, trainer.state, trainer.control)


def _restore(ctx: RunContext, args: Any, output_dir: Path, launch: distributed.Launch) -> Path | None:
    """The newest complete checkpoint, on this process' disk; every process resumes from the same one.

    One process per node downloads and verifies it (the others on the node wait, then read those
    files); the main process' choice is then checked against every node's.
    """
    if not launch.multi:
        return checkpoints.restore_latest(ctx.store, output_dir)
    with args.main_process_first(local=True, desc="checkpoint restore"):
        mine = checkpoints.restore_latest(ctx.store, output_dir) if launch.is_local_main else None
    chosen = distributed.from_main(None if mine is None else mine.name)
    if launch.is_local_main and (None if mine is None else mine.name) != chosen:
        raise RuntimeError(f"this node restored {mine.name if mine else 'no checkpoint'} but the main process "
                           f"restored {chosen}: the store changed while the run started; start it again")
    return None if chosen is None else output_dir / chosen
