"""The evaluate stages: greedy answers of the base model (before training) and of base + adapter
(after) on held-out prompts, scored by the correctness reward itself.

Measured per stage: accuracy (the `<answer>` block equals the reference by `grpo_job.answers`, with
`data.answer_type`: the correctness reward is called, so training signal and accuracy agree), format compliance (the whole completion is the reasoning/answer format,
as `format` scores it), the partial-format score, the share of answers cut off at `max_new_tokens`,
and the mean completion length in tokens. Results go to `eval/<which>.json` in the run store.

Generation is transformers' `generate`, greedy (deterministic), batched with left padding, on the
GPU when there is one. vLLM is not used here: these stages run in the same process as the train
stage, where the unsloth engine builds its own vLLM engine with `gpu_memory_utilization` of the GPU;
a second engine next to it would take that memory twice, and a plain `vllm.LLM` built in a process
that imported unsloth was seen to hang. On a 135M-3B model and a few hundred prompts transformers'
batched greedy decoding takes seconds to a few minutes on one GPU.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpo_job import data, models
from grpo_job import rewards as R
from grpo_job.answers import AnswerType
from grpo_job.training import engines

if TYPE_CHECKING:
    from grpo_job.pipeline import RunContext
    from grpo_job.settings import JobSettings

log = logging.getLogger(__name__)

SAMPLES_KEPT = 20  # completions kept in eval/<which>.json for reading


def load_model(s: JobSettings, ctx: RunContext, adapter: bool) -> tuple[Any, Any]:
    """(model in eval mode on the best device, tokenizer). With `adapter`, the LoRA from the store's
    `adapter/` is merged into the base weights (faster generation, same outputs)."""
    if not engines.has_cuda_gpu():
        # as in the train stage: Triton (imported with transformers/peft) reads this once, at import
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if engines.pick_engine(s) == "unsloth":
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
        ctx.store.get_dir("adapter", local)
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


def generate(
    model: Any, tok: Any, prompts: list[list[dict]], max_new_tokens: int, batch_size: int,
    sample: bool = False, temperature: float = 1.0, seed: int = 0,
) -> list[tuple[str, list[int]]]:
    """(completion text, completion token ids up to and including the first eos) for each chat prompt.
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
        texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts[i : i + batch_size]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
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


def score(texts: list[str], lengths: list[int], answers: list[str], max_new_tokens: int,
          answer_type: AnswerType = "auto") -> dict[str, float]:
    """The evaluation numbers for completions (`lengths` in tokens) and their reference answers;
    accuracy is the correctness reward's mean with the same `answer_type` (`data.answer_type`)."""
    n = max(len(texts), 1)
    return {
        "accuracy": sum(R.correctness_reward(texts, answer=answers, answer_type=answer_type)) / n,
        "format_rate": sum(R.format_reward(texts)) / n,
        "partial_format": sum(R.partial_format_reward(texts)) / n,
        "answer_tag_rate": sum(R.extract_answer(t) is not None for t in texts) / n,
        "clipped_rate": sum(n_tok >= max_new_tokens for n_tok in lengths) / n,
        "mean_length": sum(lengths) / n,
    }


def eval_rows(ctx: RunContext) -> list[dict]:
    """The prompts to evaluate: `evaluation.data_path` mapped by the task, else the held-out split;
    the first `max_samples` (whole split on a GPU, `cpu_samples` on CPU when unset)."""
    s = ctx.settings
    ev = s.evaluation
    if ev.data_path:
        raw = data.read_rows(Path(ev.data_path.removeprefix("file://")))
        rows = data.map_rows(raw, s.data, ev.data_path)
    else:
        rows = data.from_jsonl(ctx.store.read_text("data/eval.jsonl"))
    limit = ev.max_samples or (None if engines.has_cuda_gpu() else ev.cpu_samples)
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
    model, tok = load_model(s, ctx, adapter=which == "trained")
    device = str(model.device)
    t0 = time.monotonic()
    try:
        gens = generate(model, tok, [r["prompt"] for r in rows], max_new, s.evaluation.batch_size, seed=s.train.seed)
    finally:
        free(model)
    seconds = time.monotonic() - t0
    texts, ids = [g[0] for g in gens], [g[1] for g in gens]
    answers = [str(r["answer"]) for r in rows]
    metrics = score(texts, [len(i) for i in ids], answers, max_new, s.data.answer_type)
    correct = R.correctness_reward(texts, answer=answers, answer_type=s.data.answer_type)
    samples = [
        {"question": r["prompt"][-1]["content"], "answer": a, "completion": t, "correct": bool(c)}
        for r, a, t, c in list(zip(rows, answers, texts, correct, strict=True))[:SAMPLES_KEPT]
    ]
    summary = {"which": which, "n": len(rows), "max_new_tokens": max_new, "device": device,
               "generate_seconds": round(seconds, 1), **{k: round(v, 4) for k, v in metrics.items()}}
    ctx.store.write_text(f"eval/{which}.json", json.dumps({**summary, "samples": samples}, indent=1))
    log.info("evaluate %s on %d examples: accuracy %.3f, format %.3f, partial format %.3f, mean length %.1f tokens",
             which, len(rows), metrics["accuracy"], metrics["format_rate"], metrics["partial_format"],
             metrics["mean_length"], extra={"evaluation": summary})
    return summary
