"""The evaluate stages: greedy answers of the base model (before training) and of base + adapter
(after) on held-out prompts, scored by the run's own rewards.

Measured per stage: every configured reward's mean on the completions, called as TRL calls it (the rows'
columns as keyword arguments), and their weighted total per completion (`reward`, TRL's sum); the share
of answers cut off at `max_new_tokens` and the mean completion length in tokens. When a reward reads the
`<answer>` format (`chat.ANSWER_FORMAT_REWARDS`), also: accuracy (the `<answer>` block equals the
reference by `grpo_job.answers`, with `data.answer_type`: the correctness reward is called, so training
signal and accuracy agree), format compliance (the whole completion is the reasoning/answer format, as
`format` scores it) and the partial-format score. A task in another format (`\boxed{}`, code, JSON) gets
no `<answer>` numbers: they would read 0 whatever the model learned. Results go to `eval/<which>.json`
in the run store.

Generation is greedy (deterministic). On a CUDA GPU with vLLM installed it runs through vLLM in a
child process (`python -m grpo_job.evaluate`): the child merges the trained adapter into a bf16 copy of the
base weights first (`merge_adapter`; a vLLM LoRA engine took 17 s more to start, capturing graphs for
its LoRA kernels, and 7 s more to generate the GSM8K test split on the H200), and the
child's exit hands all its GPU memory back before the next stage (a `vllm.LLM` built in the job's own
process would stay next to the train stage's engine, and one built in a process that imported unsloth
was seen to hang). The engine is built for one pass (`one_shot_engine_args`: no torch.compile, a few
CUDA graphs), runs inside the child (`VLLM_ENABLE_V1_MULTIPROCESSING=0`: no second process that imports
torch and vLLM again), reserves at most 90% of the memory free when it starts, capped at
`model.gpu_memory_utilization`, and the child leaves as soon as its output is written (`os._exit`: the
engine's teardown only gives back memory that the process's exit gives back anyway). Elsewhere it is transformers' `generate`, batched with left padding.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpo_job import chat, data, machine, models
from grpo_job import rewards as R
from grpo_job.answers import AnswerType
from grpo_job.training import engines

if TYPE_CHECKING:
    from grpo_job.context import RunContext
    from grpo_job.settings import JobSettings

log = logging.getLogger(__name__)

SAMPLES_KEPT = 20  # completions kept in eval/<which>.json for reading


def load_model(s: JobSettings, ctx: RunContext, adapter: bool) -> tuple[Any, Any]:
    """(model in eval mode on the best device, tokenizer). With `adapter`, the LoRA from the store's
    `adapter/` is merged into the base weights (faster generation, same outputs)."""
    machine.probe()
    if ctx.engine == "unsloth":
        import unsloth  # noqa: F401  (first: it patches transformers, and the train stage relies on that)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else (torch.float16 if cuda else torch.float32)
    path = models.resolve(s.model, ctx.cache_dir)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, revision=s.model.revision)
    tok = AutoTokenizer.from_pretrained(path, revision=s.model.revision)
    if adapter:
        from peft import PeftModel

        local = ctx.work_dir / "eval-adapter"
        ctx.store.get_dir(ctx.keys.ADAPTER, local)
        model = PeftModel.from_pretrained(model, str(local)).merge_and_unload()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.to("cuda" if cuda else "cpu").eval(), tok


def free(model: Any) -> None:
    """Give the model's memory back before the next stage loads its own."""
    import torch

    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def prompt_renderer(s: JobSettings, ctx: RunContext) -> Any:
    """The job's one prompt renderer (`grpo_job.chat.PromptRenderer`) for the model the stage loads: the
    same text and token ids the trainer builds (chat template with chat_template_kwargs, or plain)."""
    return chat.renderer(s, chat.for_run(s.model, ctx.cache_dir))


def generate(
    model: Any, tok: Any, prompts: list[list[dict]], max_new_tokens: int, batch_size: int,
    sample: bool = False, temperature: float = 1.0, seed: int = 0, *, render: Any,
) -> list[tuple[str, list[int]]]:
    """(completion text, completion token ids up to and including the first eos) for each prompt,
    rendered by `render` (`grpo_job.chat.PromptRenderer`, as the trainer renders it).
    Greedy unless `sample`; seeded either way, so repeated calls give the same completions."""
    import torch

    eos = {model.generation_config.eos_token_id} if isinstance(model.generation_config.eos_token_id, int) \
        else set(model.generation_config.eos_token_id or [tok.eos_token_id])
    tok.padding_side = "left"  # decoder-only: new tokens follow the prompt directly
    out: list[tuple[str, list[int]]] = []
    torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} if sample else \
        {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    for i in range(0, len(prompts), batch_size):
        texts = [render.text(p) for p in prompts[i : i + batch_size]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=render.add_special_tokens).to(model.device)
        with torch.inference_mode():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **sampling)
        for row in gen[:, enc["input_ids"].shape[1] :].tolist():
            ids = []
            for t in row:
                ids.append(t)
                if t in eos:
                    break
            out.append((tok.decode(ids, skip_special_tokens=True), ids))
    return out


def use_vllm() -> bool:
    """Evaluation generates through vLLM: a CUDA GPU and the vllm package are both there."""
    m = machine.probe()
    return m.gpu and m.vllm


def generate_vllm(s: JobSettings, ctx: RunContext, prompts: list[list[dict]], max_new_tokens: int,
                  adapter: bool, temperature: float = 0.0) -> list[tuple[str, list[int]]]:
    """The same (text, token ids up to and including eos) as `generate` from vLLM in a child process:
    greedy at `temperature` 0, else sampled (seeded by `train.seed`); the adapter (the store's
    `adapter/`) is merged into a copy of the base weights first (`merge_adapter`). The child's output
    is logged in the job's log format. Raises RuntimeError with the child's exit code when it fails (its
    output is in the job log)."""
    import sys

    from grpo_job import logs

    render = prompt_renderer(s, ctx)
    # the prompts as token ids from the job's renderer (the child does not render them again); text when
    # the tokenizer has no tokenizer.json (vLLM's own tokenizer then encodes it)
    encoded = [{"prompt_token_ids": ids} if (ids := render.token_ids(p)) is not None else {"prompt": render.text(p)}
               for p in prompts]
    io = ctx.work_dir / "eval-vllm"
    io.mkdir(parents=True, exist_ok=True)
    job = {"model": models.resolve(s.model, ctx.cache_dir), "revision": s.model.revision, "prompts": encoded,
           "max_new_tokens": max_new_tokens, "gpu_memory_utilization": s.model.gpu_memory_utilization,
           "seed": s.train.seed, "temperature": temperature, "adapter": None, "merged_dir": str(io / "merged")}
    if adapter:
        local = ctx.work_dir / "eval-adapter"
        ctx.store.get_dir(ctx.keys.ADAPTER, local)
        job["adapter"] = str(local)
    job["max_model_len"] = engines.vllm_max_model_len(s.model.max_seq_length, engines.model_max_positions(job["model"]))
    (io / "job.json").write_text(json.dumps(job))
    (io / "out.json").unlink(missing_ok=True)
    # a fresh process: not the trainer's torch.distributed variables (TRL colocate sets them in this one)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    rc = logs.run_logged([sys.executable, "-m", "grpo_job.evaluate", str(io / "job.json"), str(io / "out.json")],
                         env=env, logger="evaluate.vllm")
    if rc != 0:
        raise RuntimeError(f"vLLM evaluation process exited {rc} (its log is above)")
    out = json.loads((io / "out.json").read_text())
    shutil.rmtree(io / "merged", ignore_errors=True)  # a copy of the model's weights, needed no more
    log.info("vLLM generation: imports %.1f s, adapter merged in %.1f s, engine ready in %.1f s, %d completions "
             "in %.1f s", out["import_s"], out.get("merge_s", 0.0), out["init_s"], len(out["generations"]),
             out["generate_s"], extra={"vllm": {k: out.get(k) for k in ("import_s", "merge_s", "init_s", "generate_s")}})
    return [(t, ids) for t, ids in out["generations"]]


# A one-shot pass (evaluation, preflight) starts fast: no torch.compile (cold, it took most of a
# 70-170 s engine start on the H200) and full CUDA graphs for decode batches only, captured at a few
# sizes (batches pad up to the next one); prefill runs eagerly. Eager decode alone was 5.9x slower
# (docs/benchmarks.md), hence the graphs. Batches never exceed the largest captured size.
ONE_SHOT_CUDA_GRAPH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


def one_shot_engine_args() -> dict[str, Any]:
    """vLLM `LLM(...)` arguments for a one-shot generation pass (see ONE_SHOT_CUDA_GRAPH_SIZES)."""
    return {"compilation_config": {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY",
                                   "cudagraph_capture_sizes": ONE_SHOT_CUDA_GRAPH_SIZES},
            "max_num_seqs": ONE_SHOT_CUDA_GRAPH_SIZES[-1]}


def merge_adapter(base: str, adapter: str, out: str, revision: str | None = None, device: str = "cuda") -> str:
    """A copy of the base model (`base`, a transformers folder or Hub id at `revision`) with the LoRA in
    `adapter` merged into its weights (W + scaling * B @ A, peft's merge_and_unload), saved to `out` as
    safetensors in bf16, loaded and merged on `device`; returns `out`. The tokenizer is not copied: the
    caller reads the base model's. The device memory it used is given back before it returns."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16, revision=revision, device_map=device)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(out)
    del model, merged
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def _vllm_child(job_path: str, out_path: str, started: float) -> None:
    """Child process body: vLLM generation for the prompts in `job_path`, written to `out_path` (`started`:
    `time.monotonic()` when the child began, for the import time it reports)."""
    import time

    import torch
    from vllm import LLM, SamplingParams

    t0 = time.monotonic()
    job = json.loads(Path(job_path).read_text())
    weights = job["model"]
    if job["adapter"]:
        weights = merge_adapter(job["model"], job["adapter"], job["merged_dir"], job["revision"])
    t_merged = time.monotonic()
    free, total = torch.cuda.mem_get_info()
    llm = LLM(model=weights, tokenizer=job["model"], revision=None if job["adapter"] else job["revision"],
              tokenizer_revision=job["revision"], seed=job["seed"], max_model_len=job["max_model_len"],
              gpu_memory_utilization=min(job["gpu_memory_utilization"], 0.9 * free / total),
              **(one_shot_engine_args() if job.get("one_shot", True) else {}))
    t1 = time.monotonic()
    temperature = job.get("temperature", 0.0)
    params = SamplingParams(temperature=temperature, max_tokens=job["max_new_tokens"], skip_special_tokens=True,
                            **({"seed": job["seed"]} if temperature > 0 else {}))
    # use_tqdm=False: the job logs the timing itself, and vLLM's bar divides by its elapsed time
    # the prompts come rendered and encoded by the job's PromptRenderer (as the trainer builds them)
    outs = llm.generate(job["prompts"], params, use_tqdm=False)
    out = Path(out_path)
    tmp = out.with_name(out.name + ".partial")  # the parent reads a whole file or none
    tmp.write_text(json.dumps({
        "import_s": round(t0 - started, 1), "merge_s": round(t_merged - t0, 1), "init_s": round(t1 - t_merged, 1),
        "generate_s": round(time.monotonic() - t1, 1),
        "generations": [[o.outputs[0].text, list(o.outputs[0].token_ids)] for o in outs]}))
    tmp.replace(out)


def _leave_now(code: int) -> None:
    """End the child without the engine's teardown: it only frees GPU memory, which the process's exit frees
    too, and it took 15-30 s per evaluation on the H200 (docs/benchmarks.md, issue 20)."""
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def score(texts: list[str], lengths: list[int], answers: list[str], max_new_tokens: int,
          answer_type: AnswerType = "auto", answer_format: bool = True) -> dict[str, float]:
    """The evaluation numbers for completions (`lengths` in tokens) and their reference answers;
    accuracy is the correctness reward's mean with the same `answer_type` (`data.answer_type`).
    `answer_format` false (no reward reads the `<answer>` format): length numbers only."""
    n = max(len(texts), 1)
    out = {
        "accuracy": sum(R.correctness_reward(texts, answer=answers, answer_type=answer_type)) / n,
        "format_rate": sum(R.format_reward(texts)) / n,
        "partial_format": sum(R.partial_format_reward(texts)) / n,
        "answer_tag_rate": sum(R.extract_answer(t) is not None for t in texts) / n,
    } if answer_format else {}
    return {**out, "clipped_rate": sum(n_tok >= max_new_tokens for n_tok in lengths) / n,
            "mean_length": sum(lengths) / n}


def reward_scores(ctx: RunContext, rows: list[dict], texts: list[str], ids: list[list[int]],
                  which: str) -> dict[str, list[float]]:
    """Every configured reward's scores of the completions (NaN: not scored), called as the trainer calls
    it (`calls.check_rewards`, under `health.reward_time_limit`); a reward that fails is a SettingsError."""
    from grpo_job.rewards import calls

    s = ctx.settings
    return calls.check_rewards(ctx.rewards, prompt_renderer(s, ctx).for_trainer(rows), texts, ids,
                               found_by=f"evaluate_{which}'s greedy completions",
                               time_limit=s.health.reward_time_limit)


def reward_means(scores: dict[str, list[float]], settings_rewards: dict[str, Any]) -> dict[str, Any]:
    """`reward`: the mean over completions of the weighted sum of the scores (TRL's `reward`: a skipped
    score counts 0); `rewards`: each reward's mean over the completions it scored (None: none)."""
    n = len(next(iter(scores.values()), []))
    total = [sum(R.weight(settings_rewards[k]) * v[i] for k, v in scores.items() if not math.isnan(v[i]))
             for i in range(n)]
    means = {k: (sum(got) / len(got) if (got := [x for x in v if not math.isnan(x)]) else None)
             for k, v in scores.items()}
    return {"reward": sum(total) / n if n else None, "rewards": means}


def eval_rows(ctx: RunContext) -> list[dict]:
    """The prompts to evaluate: `evaluation.data_path` mapped by the task, else the held-out split;
    the first `max_samples` (whole split on a GPU, `cpu_samples` on CPU when unset)."""
    s = ctx.settings
    ev = s.evaluation
    if ev.data_path:
        rows = data.evaluation_rows(ev.data_path, s.data)
    else:
        rows = data.from_jsonl(ctx.store.read_text(ctx.keys.HELD_OUT_ROWS))
    limit = ev.max_samples or (None if machine.probe().gpu else ev.cpu_samples)
    return rows[:limit] if limit else rows


def run(ctx: RunContext, which: str) -> dict[str, Any]:
    """Stage body: evaluate `base` or `trained` (base + the adapter in the store)."""
    import time

    s = ctx.settings
    rows = eval_rows(ctx)
    if not rows:
        log.warning("evaluate %s: no held-out rows to evaluate", which)
        return {"which": which, "n": 0}
    max_new = s.evaluation.max_new_tokens or s.train.max_completion_length
    t0 = time.monotonic()
    if use_vllm():
        device = "cuda (vllm)"
        gens = generate_vllm(s, ctx, [r["prompt"] for r in rows], max_new, adapter=which == "trained")
    else:
        model, tok = load_model(s, ctx, adapter=which == "trained")
        device = str(model.device)
        try:
            gens = generate(model, tok, [r["prompt"] for r in rows], max_new, s.evaluation.batch_size,
                            seed=s.train.seed, render=prompt_renderer(s, ctx))
        finally:
            free(model)
    seconds = time.monotonic() - t0
    texts, ids = [g[0] for g in gens], [g[1] for g in gens]
    answers = [str(r["answer"]) for r in rows]
    answer_format = bool(chat.answer_format_readers(s))
    metrics = score(texts, [len(i) for i in ids], answers, max_new, s.data.answer_type, answer_format)
    scores = reward_scores(ctx, rows, texts, ids, which)
    by_reward = reward_means(scores, s.rewards)
    samples = [
        {"prompt": r["prompt"][-1]["content"], "answer": a, "completion": t,
         "rewards": {k: v[i] for k, v in scores.items()}}
        for i, (r, a, t) in enumerate(list(zip(rows, answers, texts, strict=True))[:SAMPLES_KEPT])
    ]
    if answer_format:
        correct = R.correctness_reward(texts[:SAMPLES_KEPT], answer=answers[:SAMPLES_KEPT],
                                       answer_type=s.data.answer_type)
        for sample, c in zip(samples, correct, strict=True):
            sample["correct"] = bool(c)
    summary = {"which": which, "n": len(rows), "max_new_tokens": max_new, "device": device,
               "generate_seconds": round(seconds, 1), **{k: round(v, 4) for k, v in metrics.items()},
               "reward": _rounded(by_reward["reward"]),
               "rewards": {k: _rounded(v) for k, v in by_reward["rewards"].items()}}
    ctx.store.write_text(ctx.keys.evaluation(which), json.dumps({**summary, "samples": samples}, indent=1))
    shown = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    said = [f"{label} {metrics[k]:.3f}" for k, label in (("accuracy", "accuracy"), ("format_rate", "format"),
                                                          ("partial_format", "partial format")) if k in metrics]
    said.append(f"reward {shown(by_reward['reward'])} (" + ", ".join(f"{k} {shown(v)}" for k, v in
                                                                     by_reward["rewards"].items()) + ")")
    log.info("evaluate %s on %d examples: %s, mean length %.1f tokens", which, len(rows), ", ".join(said),
             metrics["mean_length"], extra={"evaluation": summary})
    for note in recipe_notes(s, which, metrics["clipped_rate"], max_new, scores):
        log.warning("evaluate %s: %s", which, note)
    return summary


def recipe_notes(s: JobSettings, which: str, clipped: float, max_new_tokens: int,
                 scores: dict[str, list[float]]) -> list[str]:
    """What an evaluation's numbers say is wrong with the recipe (trial X: the base model scored 1.000 with every
    completion cut off, and nothing was said): half or more of the completions cut off at `max_new_tokens`
    (`clipped`, a share); on `base`, every weighted reward in [0, 1] at 0.95 of its full score or more, so GRPO's
    group differences have little left to teach. `scores`: each reward's scores (NaN: not scored)."""
    out = []
    if clipped >= 0.5:
        setting = ("evaluation.max_new_tokens [GRPO_EVALUATION__MAX_NEW_TOKENS]" if s.evaluation.max_new_tokens else
                   "train.max_completion_length [GRPO_TRAIN__MAX_COMPLETION_LENGTH] (and model.max_seq_length with it)")
        out.append(f"{clipped:.0%} of the completions were cut off at {max_new_tokens} new tokens before they finished: "
                   f"an answer may be cut, or followed by text the rewards read too; raise {setting}, or ask for a "
                   "shorter answer")
    scored = {name: got for name, entry in s.rewards.items()
              if R.weight(entry) != 0 and (got := [x for x in scores.get(name, []) if not math.isnan(x)])}
    means = {name: sum(got) / len(got) for name, got in scored.items() if all(0 <= x <= 1 for x in got)}  # full: 1
    if which == "base" and means and len(means) == len(scored) and min(means.values()) >= 0.95:
        out.append(f"the base model already scores {', '.join(f'{k} {v:.3f}' for k, v in means.items())} on the "
                   f"{max(map(len, scored.values()))} evaluation rows, at or near each reward's full score: GRPO "
                   "learns from score differences within a group, so training has little to teach here; check that "
                   "the task is not solved already (a stricter reward, harder prompts, more evaluation rows)")
    return out


def _rounded(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


if __name__ == "__main__":  # the vLLM child of `generate_vllm`
    import sys
    import time

    _started = time.monotonic()
    # the engine core in this process: a second process would import torch and vLLM again (10-20 s)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    _vllm_child(sys.argv[1], sys.argv[2], _started)
    _leave_now(0)
