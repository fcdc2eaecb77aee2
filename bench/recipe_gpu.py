"""The default recipe against TRL's default colocate settings, as production runs: the job as a subprocess,
settings from GRPO_* variables only, JSON logs, GPU memory sampled by nvidia-smi every 0.5 s.

    # device (kit staged by tests/gpu_device.sh): one variant per call; its files land in $OUT
    python3 bench/recipe_gpu.py run trl --model /tmp/models/qwen05 --gsm8k /tmp/gpu-stage/gsm8k
    # here: the table (s/step, tokens/s, peak memory, accuracy) of result folders, and a JSON file
    python3 bench/recipe_gpu.py table DIR [DIR ...] --json bench/results/NAME.json

Variants (the same optimizer batch: 64 completions, 8 prompts x 8; everything else the job's defaults):
- `job`: the defaults (`train.steps_per_generation: auto`, `model.gpu_memory_utilization` 0.6). The
  acceptance test tests/test_gpu_vllm.py::test_default_recipe_learns runs the same; its folder in
  tests/gpu_device.sh's results.tgz reads the same way.
- `trl`: TRL's defaults for colocate: one generation per optimizer step (`steps_per_generation` =
  gradient_accumulation_steps = 1), `vllm_gpu_memory_utilization` 0.3 and vLLM's own outputs (text
  detokenized step by step, a Logprob object per token: `generation_kwargs: {detokenize: true,
  flat_logprobs: false}` puts back what the job leaves out).
- `job-text`: the defaults with vLLM's own outputs as in `trl` (the job before its lean vLLM outputs,
  grpo_job.training.engines.LEAN_VLLM_OUTPUTS): what the lean outputs save.
- `job-noflat`: the defaults with the text off but vLLM's per-token log-prob dicts (`flat_logprobs: false`):
  which half of the lean outputs pays inside the trainer's process.
- `job-nogc`: the defaults without gradient checkpointing (TRL's default is on) and vLLM at 0.25 of the card
  (its KV cache needs under 2 GiB here; the activations of 64 full sequences need the room).
- `job-spg8`: one vLLM batch of 512 feeds 8 optimizer steps (`train.steps_per_generation: 8`).
- `job-noflat-spg8`: `job-noflat` and `job-spg8` together.
- `job-gcfreeze` (with `--profile`): the defaults with Python's garbage collector told to skip every object alive
  when training starts (`gc.freeze()`; bench/profiled_job.py `PROFILE_GC_FREEZE`): whether the collector's passes
  over the trainer's heap slow vLLM's per-sequence work in the same thread (`--profile` logs their seconds per block).
- `job-v1runner`: the defaults on vLLM's V1 model runner (`VLLM_USE_V2_MODEL_RUNNER=0`; vLLM 0.26 picks its V2
  runner for dense models such as Qwen2): which runner decodes 256 sequences faster inside the trainer.

`--fixed-length STEPS` times the system alone: every completion runs to `max_completion_length` (vLLM's
`ignore_eos`, through `train.extra.generation_kwargs`), evaluation and preflight off, STEPS optimizer
steps; the folder is named `<variant>-fixed`. Learning changes completion lengths, and a vLLM batch runs
as long as its longest completion, so only equal lengths compare the step rates of the two settings.

A result folder holds job.log, metrics.jsonl, eval_base.json, eval_trained.json, stages_train.json and
gpu-memory.csv. Seconds per step: the mean over steps 2-100 (step 1 compiles); completion tokens/s: the
completions' tokens over the same time (the fair rate: step time follows completion length, which each
run's learning changes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # GRPO_* settings (and vLLM environment variables) of each variant
    "job": {},
    "trl": {"GRPO_TRAIN__STEPS_PER_GENERATION": "1", "GRPO_MODEL__GPU_MEMORY_UTILIZATION": "0.3"},
    "job-text": {},
    "job-noflat": {},
    "job-nogc": {"GRPO_MODEL__GPU_MEMORY_UTILIZATION": "0.25"},
    "job-spg8": {"GRPO_TRAIN__STEPS_PER_GENERATION": "8"},
    "job-noflat-spg8": {"GRPO_TRAIN__STEPS_PER_GENERATION": "8"},
    "job-v1runner": {"VLLM_USE_V2_MODEL_RUNNER": "0"},
    "job-gcfreeze": {"PROFILE_GC_FREEZE": "1"},
}
# vLLM SamplingParams a variant adds (TRL merges `generation_kwargs` over its own, the job's over TRL's)
VLLM_OWN_OUTPUTS = {"detokenize": True, "flat_logprobs": False}
GENERATION_KWARGS = {"trl": VLLM_OWN_OUTPUTS, "job-text": VLLM_OWN_OUTPUTS, "job-noflat": {"flat_logprobs": False},
                     "job-noflat-spg8": {"flat_logprobs": False}}
# other GRPOConfig arguments a variant adds (train.extra)
EXTRA = {"job-nogc": {"gradient_checkpointing": False}}


def run(variant: str, model: str, gsm8k: Path, out: Path, preflight: bool, fixed_steps: int | None = None,
        profile: bool = False) -> int:
    name = (f"{variant}-fixed" if fixed_steps else variant) + ("-profile" if profile else "")
    base = Path("/tmp/recipe-bench") / name
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPO_")}
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", GRPO_RUN_ID=name, GRPO_STORE__URI=str(base / "store"),
               GRPO_WORK_DIR=str(base / "work"), GRPO_MODEL__NAME_OR_PATH=model,
               GRPO_DATA__PATH=str(gsm8k / "train.jsonl"), GRPO_EVALUATION__DATA_PATH=str(gsm8k / "test.jsonl"),
               GRPO_EXPORT__MERGE="false", GRPO_EXPORT__QUANTIZATIONS="[]", **VARIANTS[variant])
    if not preflight or fixed_steps:
        env["GRPO_HEALTH__PREFLIGHT_SAMPLES"] = "0"
    generation_kwargs = dict(GENERATION_KWARGS.get(variant, {}))
    if fixed_steps:
        env.update(GRPO_TRAIN__MAX_STEPS=str(fixed_steps), GRPO_EVALUATION__ENABLED="false")
        generation_kwargs["ignore_eos"] = True
    extra = dict(EXTRA.get(variant, {}))
    if generation_kwargs:
        extra["generation_kwargs"] = generation_kwargs
    if extra:
        env["GRPO_TRAIN__EXTRA"] = json.dumps(extra)
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,memory.used,utilization.gpu", "--format=csv,noheader",
                            "-lms", "500"], stdout=open(base / "gpu-memory.csv", "w"))
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "run"]
    if variant == "job-gcfreeze" and not profile:
        raise SystemExit("job-gcfreeze freezes the heap through bench/profiled_job.py: add --profile")
    if profile:  # TRL's own block timings, one line per block (bench/profiled_job.py)
        cmd = [sys.executable, str(ROOT / "bench" / "profiled_job.py")]
        env["PROFILE_JSONL"] = str(base / "profile.jsonl")
    t0 = time.monotonic()
    with open(base / "job.log", "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=log).returncode
    smi.terminate()
    print(f"{name}: exit {rc} after {time.monotonic() - t0:.0f} s")
    store = base / "store" / name
    for f in ("metrics.jsonl", "eval/base.json", "eval/trained.json", "stages/train.json",
              "stages/evaluate_base.json", "stages/evaluate_trained.json", "stages/reward_preflight.json"):
        if (store / f).is_file():
            shutil.copy(store / f, base / f.replace("/", "_"))
    shutil.rmtree(base / "store")
    shutil.rmtree(base / "work")
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / f"recipe-{name}.tgz", "w:gz") as tar:
        tar.add(base, arcname=name)
    return rc


def summarize(folder: Path) -> dict:
    """The run's numbers. Metrics carry rewards at generation steps only (with `steps_per_generation` 4:
    steps 1, 5, 9...), where the job's step timer gives the mean time per step since the last one: a
    window's time is that times its steps. Step 1 (compilation, first graphs) is left out."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    gen = [r for r in rows if "reward" in r]
    read = lambda name: json.loads((folder / name).read_text()) if (folder / name).is_file() else {}  # noqa: E731
    base, trained, train = read("eval_base.json"), read("eval_trained.json"), read("stages_train.json")
    batch = train.get("generation_batch_size") or 64
    windows = [(b["step"] - a["step"], b["step_time"] * (b["step"] - a["step"]), batch * b["completions/mean_length"])
               for a, b in zip(gen, gen[1:], strict=False)]
    steps, seconds, tokens = (sum(w[i] for w in windows) for i in range(3))
    # TRL's own per-step time on the rows without rewards: the train-only steps between generations
    train_only = [r["step_time"] for r in rows if "reward" not in r and "step_time" in r and "train_runtime" not in r]
    gen_step = [w[1] - sum(r["step_time"] for r in rows if "reward" not in r and "step_time" in r
                           and b["step"] - w[0] < r["step"] < b["step"]) for w, b in zip(windows, gen[1:], strict=False)]
    mem = [float(line.split(",")[1].split()[0]) for line in (folder / "gpu-memory.csv").read_text().splitlines()
           if line.count(",") >= 2 and "MiB" in line] if (folder / "gpu-memory.csv").is_file() else []
    return {
        "folder": folder.name, "steps": gen[-1]["step"] if gen else 0,
        "steps_per_generation": train.get("steps_per_generation"), "generation_batch": batch,
        "s_per_step_mean": round(seconds / steps, 3) if steps else None,
        "generation_step_s_median": round(statistics.median(gen_step), 2) if gen_step else None,
        "train_only_step_s_median": round(statistics.median(train_only), 3) if train_only else None,
        "completion_tokens_per_s": round(tokens / seconds) if seconds else None,
        "mean_completion_tokens": round(tokens / steps / (batch / max(train.get("steps_per_generation") or 1, 1)), 1)
        if steps else None,
        "train_stage_s": train.get("seconds"),
        "peak_gpu_memory_GiB": round(max(mem) / 1024, 1) if mem else None,
        "accuracy_base": base.get("accuracy"), "accuracy_trained": trained.get("accuracy"),
        "format_trained": trained.get("format_rate"), "eval_n": trained.get("n"),
        "eval_base_stage_s": read("stages_evaluate_base.json").get("seconds"),
        "eval_trained_stage_s": read("stages_evaluate_trained.json").get("seconds"),
        "reward_by_step": {r["step"]: round(r["reward"], 3) for r in gen if r["step"] % 8 == 1},
        "completion_length_by_step": {r["step"]: round(r["completions/mean_length"]) for r in gen if r["step"] % 8 == 1},
    }


def profile(folder: Path) -> dict | None:
    """TRL's block timings (profile.jsonl, from `run --profile`) per kind of step: the median over steps
    1.. (step 0 compiles) of each block's seconds summed within a step. A generation step is one with
    `vLLM.generate` (or `transformers.generate`, without vLLM).
    `_get_per_token_logps_and_entropies` runs inside `_prepare_inputs` (the old log-probs of the whole
    generation batch, when off-policy) and inside `compute_loss` (the training forward)."""
    path = folder / "profile.jsonl"
    if not path.is_file():
        return None
    per_step: dict[int, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        blocks = per_step.setdefault(r["step"], {})
        blocks[r["name"]] = blocks.get(r["name"], 0.0) + r["s"]
    generated = {s for s, b in per_step.items() if any(n.endswith("generate") for n in b)}  # vLLM or transformers
    out = {}
    for kind, steps in (("generation", [b for s, b in per_step.items() if s > 0 and s in generated]),
                        ("train_only", [b for s, b in per_step.items() if s > 0 and s not in generated])):
        names = sorted({n for b in steps for n in b})
        out[kind] = {"steps": len(steps), **{n: round(statistics.median(b.get(n, 0.0) for b in steps), 3) for n in names}}
    return out


def table(folders: list[Path], out: Path | None) -> None:
    rows = [summarize(f) for f in folders]
    for f, r in zip(folders, rows, strict=True):
        if (blocks := profile(f)) is not None:
            r["profile"] = blocks
            for kind, medians in blocks.items():
                print(f"{f.name} {kind} steps, median seconds per block: " + ", ".join(f"{n} {v}" for n, v in medians.items()))
    cols = ["folder", "steps_per_generation", "s_per_step_mean", "generation_step_s_median",
            "train_only_step_s_median", "completion_tokens_per_s", "mean_completion_tokens", "train_stage_s",
            "peak_gpu_memory_GiB", "accuracy_base", "accuracy_trained", "format_trained", "eval_n",
            "eval_base_stage_s", "eval_trained_stage_s"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if out:
        out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "argv": sys.argv, "results": rows}, indent=1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("variant", choices=sorted(VARIANTS))
    r.add_argument("--model", required=True)
    r.add_argument("--gsm8k", type=Path, required=True)
    r.add_argument("--preflight", action="store_true", help="keep the reward preflight (off: it is the same for both)")
    r.add_argument("--fixed-length", type=int, metavar="STEPS", help="time STEPS steps at full-length completions")
    r.add_argument("--profile", action="store_true", help="record TRL's block timings (bench/profiled_job.py)")
    t = sub.add_parser("table")
    t.add_argument("folders", nargs="+", type=Path)
    t.add_argument("--json", type=Path)
    a = p.parse_args()
    if a.cmd == "run":
        return run(a.variant, a.model, a.gsm8k, Path(os.environ.get("OUT", "/tmp/out")), a.preflight,
                   a.fixed_length, a.profile)
    table(a.folders, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
