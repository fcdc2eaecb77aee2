"""Every check that runs before the first GPU minute, in one place.

- `plan` (what `check` prints, and what `run` checks first): the settings against this machine (packages,
  GPU, engine), the model's files and context length, what the Hub says of a Hub model or dataset
  (`hub_problems`), the data (columns, mapping, references, prompts,
  a dry call of every reward: `load_and_check_data`), the artifacts' tools and the Hub token, the store
  and how a restart with these settings would go (`restart_plan`). Every problem found is listed in one
  SettingsError (exit 2).
- `prepare_data` (the first stage): the same data checks with the model's tokenizer, then the checked
  rows into the store.
The reward calls themselves are `grpo_job.rewards.calls`.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grpo_job import data, machine, resume
from grpo_job.context import RunContext, StoreKeys, marker_key, open_run
from grpo_job.errors import SettingsError
from grpo_job.rewards import calls
from grpo_job.settings import JobSettings
from grpo_job.settings.data import is_data_file, saved_dataset
from grpo_job.store import checkpoints, lease

log = logging.getLogger(__name__)


def plan(settings: JobSettings, stages: Sequence[Any], inspect_data: bool = True, ctx: RunContext | None = None) -> dict:
    """What `run` would do with `stages` (the run's stage list, `grpo_job.stages.stages()`), after checking
    everything that can be checked without a GPU or a download.
    With `inspect_data` (`check`), a local or built-in dataset is read whole and mapped, and its prompts are
    checked against the model's chat template and `max_prompt_length`, every reward is called on a few of
    its rows, and `evaluation.data_path` is read and mapped (`run` does that in prepare_data). `ctx`: the run
    this plan is for (`run` passes the one it then runs, so the engine is picked once), else opened here.
    Raises SettingsError listing every problem found."""
    from grpo_job import models
    from grpo_job.settings import environment

    ctx = open_run(settings) if ctx is None else ctx
    problems: list[str] = environment.problems(settings)
    engine = ctx.engine
    gpu = machine.probe().gpu
    if engine == "unsloth" and not gpu:
        problems.append("model.engine=unsloth needs an NVIDIA GPU and none is visible; set GRPO_MODEL__ENGINE=trl")
    if engine == "unsloth" and not importlib.util.find_spec("unsloth"):
        problems.append("model.engine=unsloth but Unsloth is not installed: pip install '.[gpu]' or use engine trl")
    vllm_generates = gpu and (engine == "unsloth" or machine.probe().vllm)
    named, unused = environment.generation_kwargs_names(settings, vllm=vllm_generates)
    problems.extend(named)
    for note in unused:
        log.warning("%s", note)
    if "8bit" in settings.train.optim and not gpu:
        problems.append(
            f"train.optim={settings.train.optim} needs a CUDA GPU (bitsandbytes); on CPU set GRPO_TRAIN__OPTIM=adamw_torch"
        )
    model_source = None
    try:
        model_source = models.source_dir(settings.model)
    except SettingsError as e:
        problems.append(str(e))
    problems.extend(hub_problems(settings, model_on_hub=model_source is not None and models.is_hub_id(settings.model)))
    if model_source is not None:
        from grpo_job import chat

        try:  # prompt + completion lengths against the model's context length
            chat.check_context(settings, settings.resolved_cache_dir())
        except SettingsError as e:
            problems.append(str(e))
    data_report: dict = {}
    inspected = False  # load_and_check_data ran (it reads evaluation.data_path too)
    try:
        file = None if settings.data.path.startswith("s3://") else data.local_data_file(settings.data, Path("."))
        saved_dict = saved_dataset(settings.data.path) == "dataset_dict"
        if file is not None:
            data.check_columns(data.peek_columns(file), settings.data, str(file))
        elif saved_dict:
            data.check_columns(data.saved_dict_columns(settings.data), settings.data, settings.data.path)
        elif settings.data.path.startswith("s3://"):
            from grpo_job.store.s3 import object_size

            object_size(settings.data.path)
        # the data is inspected with the rewards built: only when the environment checks (which build them) passed
        if (inspect_data and model_source is not None and not problems
                and (file is not None or saved_dict or settings.data.path.startswith("builtin:"))):
            inspected = True
            data_report = inspect_local_data(settings)
    except SettingsError as e:
        problems.append(str(e))
    ev = settings.evaluation
    if (inspect_data and not inspected and ev.enabled and ev.data_path
            and (Path(ev.data_path.removeprefix("file://")).is_file() or saved_dataset(ev.data_path) == "dataset")):
        try:  # data the inspection above did not read (a Hub or S3 dataset, or problems found first)
            data_report["evaluation_rows"] = len(data.evaluation_rows(ev.data_path, settings.data))
        except SettingsError as e:
            # columns the training data lacks too are a setting's fault, already named (trial: the message on the
            # evaluation file told a user whose file was right to give it the training data's columns)
            lacks = re.search(r"lacks column\(s\) (\[.*?\]);", str(e))
            if not (lacks and any(f"lacks column(s) {lacks[1]};" in p for p in problems)):
                problems.append(str(e))

    problems.extend(artifact_problems(settings))

    try:
        ctx.store.check_reachable()
        done = {s.name for s in stages if ctx.store.exists(marker_key(s.name))}
        restart = restart_plan(ctx, stages)
        saved_steps = checkpoints.complete_steps(ctx.store) if "train" not in done else []
        held = lease.held_elsewhere(ctx.store) if settings.store.lease_seconds else None
    except SettingsError as e:
        problems.append(str(e))
        done, restart, saved_steps, held = set(), None, [], None
    if restart is not None:
        problems.extend(restart.refused)
        done -= set(restart.redo)
    if problems:
        raise SettingsError("the run cannot start:\n" + "\n".join(f"  - {p}" for p in problems))
    shown = []
    for s in stages:
        state = "done" if s.name in done else ("run" if s.enabled(settings) else "disabled")
        shown.append({"stage": s.name, "will": state, "about": s.about})
    return {
        "run_id": ctx.run_id,
        "store": ctx.store.uri,
        "engine": engine,
        "gpu": gpu,
        "model": model_source,
        "data": settings.data.path,
        "data_report": data_report,
        "rewards": settings.rewards,
        # GRPOConfig's other arguments as the run passes them, converted to their types (trials: shown nowhere)
        "extra": environment.grpo_config_extra(settings.train.extra) if settings.train.extra else {},
        "stages": shown,
        "restart": [] if restart is None else restart.notes,
        # the newest complete checkpoint the train stage will resume from (None: it starts at step 0)
        "resume_from_step": max(saved_steps) if saved_steps else None,
        "lease": held,  # another process holds the run (store/lease.py), or None
    }


def hub_problems(settings: JobSettings, model_on_hub: bool) -> list[str]:
    """The Hub's answer for the model (`model_on_hub`: it names a Hub id) and a Hub dataset: missing,
    private, gated, no such revision (grpo_job/hub.py). What could not be asked is logged as a note."""
    from grpo_job import hub

    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    asked = []
    if model_on_hub:
        asked.append((settings.model.name_or_path, "model", settings.model.revision, "model.name_or_path", "model.revision"))
    d = settings.data
    if not d.path.startswith("builtin:") and not is_data_file(d.path) and not Path(d.path).exists():  # local: not the Hub's
        asked.append((d.path, "dataset", d.revision, "data.path", "data.revision"))
    problems = []
    for repo_id, repo_type, revision, setting, revision_setting in asked:
        problem, note = hub.read_problem(repo_id, repo_type, revision, token, setting, revision_setting)
        if problem:
            problems.append(problem)
        elif note:
            log.warning("%s; a missing or unreadable %s fails when the run downloads it", note, repo_type)
    return problems


def inspect_local_data(settings: JobSettings) -> dict:
    """The prepare_data checks on a local or built-in dataset, with the tokenizer files on this machine (no
    download, no torch): the mapping, row counts, the columns each reward needs, the chat template, prompt
    lengths (not counted for a GGUF model until its first run has dequantized it)."""
    from grpo_job import chat

    cache = settings.resolved_cache_dir()
    return load_and_check_data(settings, cache, lambda: chat.for_check(settings.model, cache))[2]


def artifact_problems(settings: JobSettings) -> list[str]:
    """GGUF tools, llama-cpp-python and the Hub token: missing ones fail here, not after training."""
    from grpo_job.artifacts import llamacpp

    problems = []
    if settings.export.quantizations:
        problems.extend(llamacpp.check())
        if settings.export.verify and not importlib.util.find_spec("llama_cpp"):
            problems.append("export.verify loads each GGUF in llama.cpp but llama-cpp-python is not installed: "
                            "pip install '.[gguf]', or set GRPO_EXPORT__VERIFY=false")
    if settings.hub.repo_id and not (settings.hf_token and settings.hf_token.get_secret_value()):
        problems.append(f"hub.repo_id={settings.hub.repo_id} needs a Hugging Face token with write access: set HF_TOKEN")
    elif settings.hub.repo_id:
        from grpo_job.artifacts.publish import hub_write_problem

        problem, note = hub_write_problem(settings.hub.repo_id, settings.hf_token.get_secret_value())
        if problem:
            problems.append(problem)
        elif note:
            log.warning("%s; a token that cannot write is found at the publish stage (exit 2)", note)
    return problems


def load_and_check_data(s: JobSettings, cache_dir: Path, template: Callable[[], Any],
                        built: dict[str, Any] | None = None) -> tuple[list, list, dict]:
    """Load and map the data, then check it before any model is loaded: the rows held out (a warning
    worded for the evaluation settings), the columns each reward asks for, the reference answers, (when
    `template()` gives the model's chat template, else None) prompt rendering and lengths, a dry call of
    every reward on synthetic completions of a few rows, and the rows of `evaluation.data_path` when it
    is evaluated. `built`: the run's rewards (`RunContext.rewards`), else built here for `check`.
    (train rows, held-out rows, summary); raises SettingsError."""
    from grpo_job import chat, rewards

    train, heldout, summary = data.prepare(s.data, cache_dir)
    note = data.hold_out_note(s.data, s.evaluation, summary["source_rows"]["train"],
                                  summary["source_rows"]["held_out"])
    if note:
        summary["warnings"] = [note]
        log.warning("data: %s", note)
    built = rewards.build_all(s.rewards, s.data.answer_type) if built is None else built
    calls.check_reward_columns(built, summary["columns"])
    calls.check_reward_rows(built, train + heldout)
    chat.check_format_asked(s, train)
    if "correctness" in s.rewards or s.evaluation.enabled:
        summary.update(data.check_references(train, s.data))
    else:  # nothing compares answers (a code task scored by its tests, evaluation off): any reference will do
        summary["unparsable_answers"] = None
    if heldout and s.evaluation.enabled and not s.evaluation.data_path:  # what the evaluate stages will score
        held = data.check_references(heldout, s.data, "the held-out rows")
        summary["unparsable_held_out_answers"] = held["unparsable_answers"]
    chat_template = template()
    if chat_template is None:
        summary["chat_template"] = "not checked: the tokenizer is not downloaded yet (prepare_data checks it)"
        calls.dry_call(built, train, None, time_limit=s.health.reward_time_limit)
    else:
        render = chat.renderer(s, chat_template)
        summary.update(data.check_prompts(train, render, s.data, s.train.max_prompt_length))
        if train:
            chat.check_opening_tag(s, render, train[0]["prompt"])
        calls.dry_call(built, render.for_trainer(train), chat_template, time_limit=s.health.reward_time_limit)
    if s.evaluation.enabled and s.evaluation.data_path:
        summary["evaluation_rows"] = len(data.evaluation_rows(s.evaluation.data_path, s.data))
    return train, heldout, summary


def prepare_data(ctx: RunContext) -> dict[str, Any]:
    """Stage body: the checked data (load_and_check_data, with the model's tokenizer) into the store."""
    from grpo_job import chat

    s = ctx.settings
    train, heldout, summary = load_and_check_data(s, ctx.cache_dir, lambda: chat.for_run(s.model, ctx.cache_dir),
                                                  built=ctx.rewards)
    chat.check_context(s, ctx.cache_dir)  # the model's config.json is here now (for_run fetched it)
    ctx.store.write_text(StoreKeys.TRAIN_ROWS, data.to_jsonl(train))
    ctx.store.write_text(StoreKeys.HELD_OUT_ROWS, data.to_jsonl(heldout))
    return summary


def restart_plan(ctx: RunContext, stages: Sequence[Any]) -> resume.ResumePlan | None:
    """How the settings differ from the ones this run was last started with, and what that does to
    `stages` (the run's stage list; see grpo_job/resume.py); None for a new run. Reads the store only."""
    if not ctx.store.exists(StoreKeys.SETTINGS):
        return None
    saved = ctx.store.read_json(StoreKeys.SETTINGS)
    names = [s.name for s in stages]
    done = {n: ctx.stage_summary(n) for n in names if ctx.store.exists(marker_key(n))}
    return resume.plan(saved.get("settings", {}), ctx.settings.redacted(), stage_names=names, done=done,
                       checkpoint_steps=checkpoints.complete_steps(ctx.store), run_id=ctx.run_id)
