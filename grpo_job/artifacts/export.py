"""Artifacts from a trained adapter: the merged 16-bit model, GGUF files, and their check in llama.cpp.

Three stages, each reading its input from the run store and writing its output there:

- `merge`: the LoRA merged into a 16-bit copy of the base model (peft `merge_and_unload`), with the
  tokenizer and chat template, to `merged/`; the merged model's logits are compared with base+adapter.
  An adapter that training never changed (every module's update B·A is zero) stops the run here,
  before anything is merged, exported or published (exit 3; `export.allow_unchanged_adapter`).
- `export_gguf`: llama.cpp's own converter and `llama-quantize` (grpo_job.artifacts.llamacpp, one pinned version) turn
  `merged/` into `gguf/model-<type>.gguf` for each of `export.quantizations`.
- `verify_gguf`: each GGUF is loaded by llama.cpp (llama-cpp-python, same llama.cpp version) and
  generates greedily on fixed prompts; llama.cpp must tokenize the prompts exactly as transformers does,
  and for f16/bf16/q8_0 its greedy tokens must be the merged model's wherever the merged model's choice
  is not a near-tie (see `compare`). The result is `gguf/verify.json`.

llama.cpp runs in a child process (`python -m grpo_job.artifacts.export probe ...`): a native crash in it (an abort in
the tokenizer, as a wrongly converted vocab causes) becomes a clear stage error, not a dead job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpo_job import models
from grpo_job.errors import JobError, TrainingUnhealthy
from grpo_job.training import engines

if TYPE_CHECKING:
    from grpo_job.context import RunContext
    from grpo_job.store import RunStore

log = logging.getLogger(__name__)

FLOAT_TYPES = ("f16", "bf16")
VERIFY_PROMPTS = (
    "What is 12 + 7? Answer with a number.",
    "Name three colours of the rainbow.",
    "Translate to French: the café is naïve — 3 cats, 2 dogs.",
)
VERIFY_NEW_TOKENS = 24
# Logit margin under which the merged model's top two tokens count as a near-tie that the GGUF's precision
# may flip. Measured on SmolLM2-135M: f16 logits stay within 0.06 of transformers' float32 ones; q8_0 (whose
# CPU kernels also round activations to 8 bits) within ~2.2, mean 0.3, and it flipped greedy choices only
# where the margin was <= 0.24. q4_k_m flips choices with margins up to 2.4: it only has to generate.
TIE_MARGIN = {"f16": 0.25, "bf16": 0.25, "q8_0": 1.0}


class GGUFCheckFailed(JobError):
    """A GGUF file did not load, tokenize or generate in llama.cpp as the merged model does."""


# ---------------------------------------------------------------- merge
def changed_modules(adapter_dir: Path) -> dict[str, int]:
    """How many LoRA modules of the adapter in `adapter_dir` (peft's adapter_model.safetensors) change
    the model: those whose lora_A and lora_B are both nonzero (the update is B·A; peft starts B at 0).
    Returns {"modules": n, "changed": k}."""
    from safetensors import safe_open

    nonzero: dict[str, dict[str, bool]] = {}
    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as f:
        for name in f.keys():  # noqa: SIM118 (safe_open has keys(), no __iter__)
            for part in ("lora_A", "lora_B"):
                if f".{part}." in name:
                    module = name.split(f".{part}.")[0]
                    nonzero.setdefault(module, {})[part] = bool(f.get_tensor(name).count_nonzero())
    changed = sum(1 for parts in nonzero.values() if parts.get("lora_A") and parts.get("lora_B"))
    return {"modules": len(nonzero), "changed": changed}


def merge(ctx: RunContext) -> dict[str, Any]:
    """The LoRA merged into the base model loaded in 16 bits (never the 4-bit training copy): Unsloth's
    merged save on the unsloth engine, else peft's merge_and_unload."""
    s = ctx.settings
    adapter_dir = ctx.work_dir / "adapter"
    ctx.store.get_dir(ctx.keys.ADAPTER, adapter_dir)
    changed = changed_modules(adapter_dir)
    if not changed["changed"] and not s.export.allow_unchanged_adapter:
        steps = (ctx.stage_summary("train") or {}).get("steps")
        raise TrainingUnhealthy(
            f"the trained adapter is the untrained one: all {changed['modules']} LoRA modules have a zero update "
            f"(B·A = 0) after {steps} steps, so the merged model would be the base model. Nothing is merged, "
            "exported or published. Usual causes: every step had zero advantage (all completions of a prompt "
            "scored alike), a learning rate of 0, or max_steps=0. Set GRPO_EXPORT__ALLOW_UNCHANGED_ADAPTER=true "
            "to publish it anyway")
    base_path = models.resolve(s.model, ctx.cache_dir)
    out = ctx.work_dir / "merged"
    if ctx.engine == "unsloth":
        summary = engines.UnslothEngine().merge(base_path, adapter_dir, out, s)
        return {**summary, "files": len(ctx.store.put_dir(out, ctx.keys.MERGED))}

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # bf16 on CPU too: that is what gets shipped; fp16 only on GPUs without bf16
    dtype = torch.bfloat16
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, revision=s.model.revision)
    tok = AutoTokenizer.from_pretrained(str(adapter_dir))
    peft_model = PeftModel.from_pretrained(base, str(adapter_dir))
    probe = torch.tensor([tok(VERIFY_PROMPTS[0], add_special_tokens=False).input_ids])
    with torch.no_grad():
        before = peft_model(probe).logits.float()
        merged = peft_model.merge_and_unload()
        after = merged(probe).logits.float()
    merged.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    keys = ctx.store.put_dir(out, ctx.keys.MERGED)
    return {
        "base": base_path,
        "dtype": str(dtype).removeprefix("torch."),
        "files": len(keys),
        # the merged weights are rounded to 16 bits; the logits move by about that much, the argmax not at all
        "logits_max_abs_diff": round(float((before - after).abs().max()), 5),
        "argmax_agreement": round(float((before.argmax(-1) == after.argmax(-1)).float().mean()), 4),
    }


# ---------------------------------------------------------------- export
def export_gguf(ctx: RunContext) -> dict[str, Any]:
    """merged/ -> one GGUF per requested type: float types straight from the converter, the others
    quantized by llama-quantize from a 16-bit GGUF (bf16: the merged weights' own type, so no rounding)."""
    from grpo_job.artifacts import llamacpp

    quants = list(dict.fromkeys(ctx.settings.export.quantizations))
    tools = llamacpp.ensure()
    log.info("llama.cpp tools: %s (%s)", tools.root, tools.version())
    merged = fetch_dir(ctx.store, ctx.keys.MERGED, ctx.work_dir / "merged")
    out_dir = ctx.work_dir / "gguf"
    out_dir.mkdir(parents=True, exist_ok=True)
    floats = [q for q in quants if q in FLOAT_TYPES]
    others = [q for q in quants if q not in FLOAT_TYPES]
    source_type = "bf16" if "bf16" in floats or not floats else floats[0]
    written: dict[str, Path] = {}
    for q in floats + ([source_type] if others and source_type not in floats else []):
        written[q] = out_dir / f"model-{q}.gguf"
        convert(tools, merged, written[q], q)
    for q in others:
        written[q] = out_dir / f"model-{q}.gguf"
        quantize(tools, written[source_type], written[q], q)
    files = {}
    for q in quants:
        ctx.store.put_file(written[q], ctx.keys.gguf_file(q))
        files[q] = {"key": ctx.keys.gguf_file(q), "size": written[q].stat().st_size, "sha256": sha256_file(written[q])}
    if source_type not in quants:  # an intermediate nobody asked for
        written[source_type].unlink()
    return {"llama_cpp": tools.version(), "files": files}


def convert(tools: Any, model_dir: Path, out: Path, outtype: str) -> None:
    """llama.cpp's convert_hf_to_gguf.py, run with this interpreter (it needs torch, transformers and
    sentencepiece, all installed with the job) and its own gguf-py."""
    _tool([sys.executable, str(tools.converter), str(model_dir), "--outtype", outtype, "--outfile", str(out)],
          f"convert_hf_to_gguf.py --outtype {outtype}")


def quantize(tools: Any, src: Path, out: Path, quant: str) -> None:
    _tool([str(tools.quantize), str(src), str(out), quant.upper(), str(os.cpu_count() or 1)], f"llama-quantize {quant}")


def _tool(cmd: list[str], what: str) -> None:
    log.info("%s", what)
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # the converter must use its own gguf-py
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).splitlines()[-25:])
        raise GGUFCheckFailed(f"{what} failed (exit {r.returncode}):\n{tail}")


# ---------------------------------------------------------------- verify
def verify_gguf(ctx: RunContext) -> dict[str, Any]:
    quants = list(dict.fromkeys(ctx.settings.export.quantizations))
    merged = fetch_dir(ctx.store, ctx.keys.MERGED, ctx.work_dir / "merged")
    reference = reference_generations(merged, VERIFY_PROMPTS, VERIFY_NEW_TOKENS)
    report: dict[str, Any] = {"prompts": list(VERIFY_PROMPTS), "new_tokens": VERIFY_NEW_TOKENS,
                              "tie_margins": TIE_MARGIN, "reference": reference, "files": {}}
    local_dir = ctx.work_dir / "gguf"
    for q in quants:
        path = local_dir / f"model-{q}.gguf"
        if not (path.is_file() and path.stat().st_size == ctx.store.size(ctx.keys.gguf_file(q))):
            ctx.store.get_file(ctx.keys.gguf_file(q), path)
        report["files"][q] = compare(q, probe(path, reference, VERIFY_NEW_TOKENS), reference)
    report["passed"] = all(f["passed"] for f in report["files"].values())
    ctx.store.write_text(ctx.keys.GGUF_VERIFY, json.dumps(report, indent=1, ensure_ascii=False))
    failed = {q: f["problems"] for q, f in report["files"].items() if not f["passed"]}
    if failed:
        raise GGUFCheckFailed("GGUF check failed (details in gguf/verify.json): "
                              + "; ".join(f"{q}: {' / '.join(p)}" for q, p in failed.items()))
    return {"passed": True, "files": {q: {k: f[k] for k in ("greedy_match", "forced_agreement", "tokens_generated")}
                                      for q, f in report["files"].items()}}


def reference_generations(model_dir: Path, prompts: tuple[str, ...], new_tokens: int) -> list[dict[str, Any]]:
    """The merged model's greedy continuation of each chat-formatted prompt (transformers, float32), with
    the margin between its best and second-best logit at every generated position."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    out = []
    for prompt in prompts:
        # a base model (data.prompt_format plain) has no chat template: the prompt is the whole text
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       tokenize=False) if tok.chat_template else prompt
        ids = tok(text, add_special_tokens=False).input_ids
        with torch.no_grad():
            gen = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 do_sample=False, max_new_tokens=new_tokens, pad_token_id=tok.pad_token_id)
            new = [int(t) for t in gen[0, len(ids):]]
            logits = model(gen[:, : len(ids) + len(new) - 1]).logits[0, len(ids) - 1:]
        top2 = logits.topk(2, dim=-1).values
        out.append({"prompt": prompt, "prompt_text": text, "prompt_ids": ids, "tokens": new,  # eos kept, if reached
                    "margins": [round(float(m), 4) for m in top2[:, 0] - top2[:, 1]],
                    "text": tok.decode([t for t in new if t not in eos_ids])})
    return out


def compare(quant: str, got: dict[str, Any], reference: list[dict[str, Any]]) -> dict[str, Any]:
    """What llama.cpp did with one file against the merged model's reference.

    Every type must tokenize the prompts as transformers does and generate text. For f16/bf16/q8_0 the
    greedy output must be the merged model's, where the merged model's own choice was clear: llama.cpp
    computes in other precisions (q8_0 also rounds activations to 8 bits), so where the merged model's best
    two tokens are within `TIE_MARGIN` logits of each other either may come out. Two checks: free-running
    greedy output identical, or first different at such a near-tie; and fed the merged model's output
    (teacher forcing), llama.cpp's top token is the merged model's at every position that is not a near-tie.
    """
    if "error" in got:
        return {"passed": False, "problems": [got["error"]], "greedy_match": None, "forced_agreement": None,
                "tokens_generated": 0}
    problems, results = [], []
    tie = TIE_MARGIN.get(quant)
    for ref, res in zip(reference, got["results"], strict=True):
        row: dict[str, Any] = {"prompt": ref["prompt"], "text": res["text"], "tokens": res["tokens"],
                               "tokenization_match": res["prompt_ids"] == ref["prompt_ids"]}
        if not row["tokenization_match"]:
            problems.append(f"llama.cpp tokenizes {ref['prompt']!r} differently from transformers")
        forced, margins, want = res["forced_argmax"], ref["margins"], ref["tokens"]
        row["forced_agreement"] = round(sum(a == b for a, b in zip(forced, want, strict=True)) / max(len(want), 1), 4)
        if tie is not None:
            k = next((i for i, (a, b) in enumerate(zip(res["tokens"], want, strict=False)) if a != b), None)
            if k is None and len(res["tokens"]) != len(want):
                k = min(len(res["tokens"]), len(want))
            row["first_difference"] = k
            row["greedy_match"] = "exact" if k is None else ("near-tie" if k < len(margins) and margins[k] < tie
                                                             else "no")
            if row["greedy_match"] == "no":
                problems.append(f"greedy output for {ref['prompt']!r} leaves the merged model's at token {k}, where "
                                f"the merged model was sure (margin {margins[k] if k < len(margins) else 'n/a'}): "
                                f"{res['text']!r} vs {ref['text']!r}")
            clear_misses = [i for i, (a, b) in enumerate(zip(forced, want, strict=True)) if a != b and margins[i] >= tie]
            if clear_misses:
                problems.append(f"fed the merged model's output for {ref['prompt']!r}, llama.cpp picks another token "
                                f"at positions {clear_misses} where the merged model's margin is >= {tie}")
        results.append(row)
    generated = sum(len(r["tokens"]) for r in results)
    if generated == 0 or not any(r["text"].strip() for r in results):
        problems.append("llama.cpp generated no text for any prompt")
    greedy = None
    if tie is not None:
        kinds = {r["greedy_match"] for r in results}
        greedy = "no" if "no" in kinds else ("near-tie" if "near-tie" in kinds else "exact")
    return {"passed": not problems, "problems": problems, "tokens_generated": generated, "greedy_match": greedy,
            "forced_agreement": round(sum(r["forced_agreement"] for r in results) / len(results), 4),
            "results": results}


def probe(gguf: Path, reference: list[dict[str, Any]], new_tokens: int, timeout: int = 600) -> dict[str, Any]:
    """Load `gguf` in llama.cpp in a child process: tokenize each reference prompt, continue it greedily,
    and take llama.cpp's top token at each position of the reference continuation (teacher forcing).
    Returns {"results": [...]} or {"error": why} (a crash or a load failure)."""
    with tempfile.TemporaryDirectory() as tmp:
        request = Path(tmp) / "request.json"
        request.write_text(json.dumps({
            "model": str(gguf), "new_tokens": new_tokens,
            "prompts": [{"text": r["prompt_text"], "ids": r["prompt_ids"], "continuation": r["tokens"]}
                        for r in reference],
        }))
        r = subprocess.run([sys.executable, "-m", "grpo_job.artifacts.export", "probe", str(request)], capture_output=True,
                           text=True, timeout=timeout, cwd=Path(__file__).resolve().parents[1])
    if r.returncode != 0:
        how = f"signal {-r.returncode}" if r.returncode < 0 else f"exit {r.returncode}"
        tail = " | ".join(line for line in r.stderr.splitlines()[-6:] if line.strip())
        return {"error": f"llama.cpp failed on {gguf.name} ({how}): {tail}"}
    return json.loads(r.stdout.splitlines()[-1])


def _probe_main(request_path: str) -> None:
    """Child side of `probe`: prints one JSON line. Any native abort kills only this process."""
    import numpy as np
    from llama_cpp import Llama

    req = json.loads(Path(request_path).read_text())
    llm = Llama(model_path=req["model"], n_ctx=512, n_threads=os.cpu_count() or 1, seed=0, logits_all=True,
                verbose=False)
    eos = llm.token_eos()
    results = []
    for prompt in req["prompts"]:
        ids = llm.tokenize(prompt["text"].encode(), add_bos=False, special=True)
        new: list[int] = []
        for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
            new.append(int(token))
            if token == eos or len(new) >= req["new_tokens"]:
                break
        # teacher forcing on transformers' own prompt ids, so a tokenizer difference cannot hide here
        seq = prompt["ids"] + prompt["continuation"]
        llm.reset()
        llm.eval(seq[:-1])
        n = len(prompt["ids"])
        forced = np.asarray(llm.scores[n - 1 : len(seq) - 1]).argmax(-1).tolist() if prompt["continuation"] else []
        results.append({"prompt_ids": [int(t) for t in ids], "tokens": new, "forced_argmax": [int(t) for t in forced],
                        "text": llm.detokenize([t for t in new if t != eos]).decode("utf-8", errors="replace")})
    print(json.dumps({"results": results}))


# ---------------------------------------------------------------- helpers
def fetch_dir(store: RunStore, prefix: str, local: Path) -> Path:
    """The store's `prefix/` in `local`, downloading only files missing or of another size."""
    prefix = prefix.rstrip("/") + "/"
    for key in store.list(prefix):
        target = local / key[len(prefix):]
        if not (target.is_file() and target.stat().st_size == store.size(key)):
            store.get_file(key, target)
    return local


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "probe":
        _probe_main(sys.argv[2])
    else:
        sys.exit("usage: python -m grpo_job.artifacts.export probe REQUEST.json")
