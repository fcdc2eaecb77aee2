"""GRPO step time, memory and start-up of the job's engines on one GPU, same settings for each.

  python bench/gpu_engines.py --model /tmp/models/qwen1.5b --data .gpu/data/gsm8k/train.jsonl \\
      --engines unsloth,trl-vllm --batch 64 --steps 12 --out bench-qwen.json

Engines: `unsloth` (grpo_job.training.engines.UnslothEngine: Unsloth + in-process vLLM), `trl-vllm`
(grpo_job.training.engines.TrlEngine: TRL + peft, vLLM colocate), `trl-hf` (TrlEngine with transformers
generation). Each runs in its own process (Unsloth patches TRL at import; vLLM keeps process-wide
state) and builds the trainer from the job's own pieces: settings, engine.load, grpo_config_kwargs,
engine.grpo_args, the reward registry and the data task. Prints one table, writes JSON.

Per step: seconds (median after `--warmup` steps), completion tokens/s, and a phase split measured
by timing the trainer's own methods (CUDA-synchronised, exclusive of nested phases): generation,
weight sync into vLLM, reward scoring, no-grad log-prob passes, the loss forward with grad, and the
rest (backward, optimizer, bookkeeping). Start-up: imports, engine.load (for unsloth this includes
vLLM's init), trainer build (for TRL colocate this includes vLLM's init), first step (compile and
CUDA-graph capture). Also the decode floor: per generated token every weight byte and the batch's KV
cache are read once, over the memory bandwidth measured here with a device copy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

T_START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENGINES = ("unsloth", "trl-vllm", "trl-hf")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="local model folder")
    p.add_argument("--data", required=True, help="GSM8K-shaped .jsonl (question, answer)")
    p.add_argument("--engines", default="unsloth,trl-vllm,trl-hf")
    p.add_argument("--batch", type=int, default=8, help="completions per step (prompts x 8 generations)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--hf-steps", type=int, default=3, help="steps for trl-hf (slow)")
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the median")
    p.add_argument("--completion", type=int, default=256)
    p.add_argument("--gpu-util", type=float, default=0.3)
    p.add_argument("--max-seq", type=int, default=1024)
    p.add_argument("--out", default=None)
    p.add_argument("--one", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--one-out", help=argparse.SUPPRESS)
    return p.parse_args()


# ---------------------------------------------------------------- one engine, in its own process
class PeakNvml:
    """Device-wide used memory (what nvidia-smi shows), sampled every 0.2 s."""

    def __init__(self) -> None:
        self.peak = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        # NVML counts physical GPUs: the one CUDA_VISIBLE_DEVICES shows this process first
        h = pynvml.nvmlDeviceGetHandleByIndex(int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]))
        while True:
            self.peak = max(self.peak, pynvml.nvmlDeviceGetMemoryInfo(h).used)
            time.sleep(0.2)


class Phases:
    """Exclusive time per phase per step, from wrappers around the trainer's own bound methods."""

    def __init__(self, torch) -> None:
        self.torch, self.stack, self.current, self.steps, self.fired = torch, [], {}, [], set()

    def wrap(self, owner, attr: str, phase: str) -> bool:
        fn = getattr(owner, attr, None)
        if fn is None:
            return False
        torch = self.torch

        def timed(*a, **k):
            if phase == "logprob" and torch.is_grad_enabled():
                name = "loss_forward"
            else:
                name = phase
            torch.cuda.synchronize()
            self.stack.append(0.0)
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                torch.cuda.synchronize()
                took = time.perf_counter() - t
                children = self.stack.pop()
                self.current[name] = self.current.get(name, 0.0) + took - children
                self.fired.add(name)
                if self.stack:
                    self.stack[-1] += took

        setattr(owner, attr, timed)
        return True

    def end_step(self) -> dict:
        done, self.current = self.current, {}
        self.steps.append(done)
        return done


def bandwidth_gbs(torch) -> float:
    """Device memory bandwidth from a 1 GiB device-to-device copy (read + write bytes)."""
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    t, n = time.perf_counter(), 20
    for _ in range(n):
        y.copy_(x)
    torch.cuda.synchronize()
    bw = 2 * x.numel() * n / (time.perf_counter() - t) / 1e9
    del x, y
    return bw


def matmul_tflops(torch) -> float:
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn_like(a)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t, n = time.perf_counter(), 20
    for _ in range(n):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * n / (time.perf_counter() - t) / 1e12


def run_one(a: argparse.Namespace) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    nvml = PeakNvml()
    t0 = time.perf_counter()
    if a.one == "unsloth":
        import unsloth  # noqa: F401  (first, as the engine does; timed here as "import")
    import torch
    import transformers  # noqa: F401
    import trl  # noqa: F401

    from grpo_job import data
    from grpo_job import rewards as reward_registry
    from grpo_job.settings import load_settings
    from grpo_job.training import engines, train

    t_import = time.perf_counter() - t0
    engine_setting = "unsloth" if a.one == "unsloth" else "trl"
    s = load_settings(None, [
        f"--model.name_or_path={a.model}", f"--model.engine={engine_setting}", "--model.load_in_4bit=false",
        f"--model.max_seq_length={a.max_seq}", f"--model.gpu_memory_utilization={a.gpu_util}",
        f"--data.path={a.data}", "--data.max_samples=2000",
        '--rewards={"format": 0.5, "correctness": 2.0}',
        "--train.num_generations=8", f"--train.per_device_train_batch_size={a.batch}",
        "--train.max_prompt_length=256", f"--train.max_completion_length={a.completion}",
        f"--train.max_steps={a.hf_steps if a.one == 'trl-hf' else a.steps}", "--train.save_steps=100000",
        "--train.logging_steps=1",
    ])
    engine = engines.get(engine_setting)
    if a.one == "trl-hf":
        engine.vllm = False  # the TRL engine's own switch: transformers' generate instead of vLLM
    t1 = time.perf_counter()
    model, tok, peft_config = engine.load(a.model, s)
    t_load = time.perf_counter() - t1

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    rows, _, _ = data.prepare(s.data, Path(tempfile.mkdtemp()))
    rows = train.drop_long_prompts(rows, tok, s.train.max_prompt_length)
    out_dir = Path(tempfile.mkdtemp())
    phases = Phases(torch)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)
            phases.end_step()
            if len(times) == 1:
                self.first_done = time.perf_counter()

    class Logs(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                record.append(dict(logs, step=state.global_step))

    record: list[dict] = []
    timer = Timer()
    t2 = time.perf_counter()
    args = GRPOConfig(**train.grpo_config_kwargs(s, out_dir, quiet_progress=True), **engine.grpo_args(s))
    trainer = GRPOTrainer(model=model, processing_class=tok,
                          reward_funcs=[reward_registry.resolve(n) for n in s.rewards], args=args,
                          train_dataset=Dataset.from_list(rows), peft_config=peft_config, callbacks=[timer, Logs()])
    t_trainer = time.perf_counter() - t2

    found = {
        "generation": next((m for m in ("_generate_single_turn", "_generate") if phases.wrap(trainer, m, "generation")), None),
        "reward": "_calculate_rewards" if phases.wrap(trainer, "_calculate_rewards", "reward") else None,
        "logprob": next((m for m in ("_get_per_token_logps_and_entropies", "_get_per_token_logps")
                         if phases.wrap(trainer, m, "logprob")), None),
    }
    vg = getattr(trainer, "vllm_generation", None)
    if vg is not None and phases.wrap(vg, "sync_weights", "weight_sync"):
        found["weight_sync"] = "vllm_generation.sync_weights"
    else:
        inner = getattr(trainer.model, "base_model", trainer.model)
        for owner in (trainer.model, inner):
            if hasattr(owner, "load_lora") and phases.wrap(owner, "load_lora", "weight_sync"):
                found["weight_sync"] = "model.load_lora"
                break

    t3 = time.perf_counter()
    trainer.train()
    t_train = time.perf_counter() - t3
    first_step_s = times[0] if times else None

    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    n_params = sum(p.numel() for p in model.parameters())
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 2  # K and V, bf16
    prompt_len = statistics.mean(
        len(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False))
        for r in rows[:128])
    bw, tflops = bandwidth_gbs(torch), matmul_tflops(torch)

    w = min(a.warmup, max(len(times) - 1, 0))  # short runs (trl-hf) keep at least their last step
    steady, steady_logs, steady_phases = times[w:], record[w:], phases.steps[w:]
    step_s = statistics.median(steady)
    mean_len = statistics.mean(lg["completions/mean_length"] for lg in steady_logs)
    max_len = statistics.median(lg.get("completions/max_length", a.completion) for lg in steady_logs)
    # decode floor: max_len decode steps, each reading all weights once plus the batch's KV so far
    decode_floor = (max_len * n_bytes + a.batch * kv_per_token * sum(prompt_len + t for t in range(int(max_len)))) / (bw * 1e9)
    gen_s = statistics.median(ph.get("generation", 0.0) for ph in steady_phases) if found["generation"] else None
    phase_names = ("generation", "weight_sync", "reward", "logprob", "loss_forward")
    # None: the engine's trainer never called that method (Unsloth's compiled GRPO loss computes
    # log-probs inside its own fused loss and hands vLLM the LoRA with each generate call), so that
    # time is inside "rest" or "generation" instead.
    phase_med = {k: round(statistics.median(ph.get(k, 0.0) for ph in steady_phases), 3) if k in phases.fired else None
                 for k in phase_names}
    phase_med["rest (backward, optimizer, other)"] = round(
        statistics.median(t - sum(ph.values()) for t, ph in zip(steady, steady_phases, strict=False)), 3)
    found = {k: v for k, v in found.items() if k in phases.fired or (k == "logprob" and "loss_forward" in phases.fired)}
    tokens_trained = a.batch * (prompt_len + mean_len)
    return {
        "engine": a.one, "model": Path(a.model).name, "params_B": round(n_params / 1e9, 3), "batch": a.batch,
        "steps": len(times), "step_s_median": round(step_s, 3), "step_s_all": [round(t, 2) for t in times],
        "completion_tok_per_s": round(mean_len * a.batch / step_s, 1),
        "mean_completion_len": round(mean_len, 1), "max_completion_len_median": max_len,
        "mean_prompt_len": round(prompt_len, 1),
        "peak_torch_alloc_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "peak_torch_reserved_GiB": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        "peak_nvml_used_GiB": round(nvml.peak / 2**30, 2),
        "reward_end": round(statistics.mean(lg["reward"] for lg in record[-3:]), 3) if record else None,
        "rewards_per_step": [round(lg["reward"], 3) for lg in record],
        "phases_median_s": phase_med, "phase_hooks": found,
        "startup_s": {"import": round(t_import, 1), "engine_load": round(t_load, 1),
                      "trainer_build": round(t_trainer, 1), "first_step": round(first_step_s or 0, 1),
                      "process_start_to_first_step_done": round(timer.first_done - T_START, 1) if times else None},
        "train_s": round(t_train, 1),
        "measured_bandwidth_GBs": round(bw, 1), "measured_bf16_matmul_TFLOPs": round(tflops, 1),
        "weight_bytes_GB": round(n_bytes / 1e9, 3), "kv_bytes_per_token": kv_per_token,
        "decode_floor_s": round(decode_floor, 3),
        "roofline_generation": round(decode_floor / gen_s, 3) if gen_s else None,
        "train_floor_s": round(6 * n_params * tokens_trained / (tflops * 1e12), 3),
        "roofline_step": round((decode_floor + 6 * n_params * tokens_trained / (tflops * 1e12)) / step_s, 3),
        "settings": {"lr": s.train.learning_rate, "loss_type": s.train.loss_type, "optim": s.train.optim,
                     "num_generations": 8, "max_completion_length": a.completion, "lora_r": s.lora.r,
                     "gpu_memory_utilization": a.gpu_util, "max_seq_length": a.max_seq},
    }


# ---------------------------------------------------------------- driver
COLS = [("engine", "engine"), ("model", "model"), ("batch", "batch"), ("steps", "steps"),
        ("step_s_median", "s/step"), ("completion_tok_per_s", "compl tok/s"),
        ("peak_torch_alloc_GiB", "torch peak GiB"), ("peak_nvml_used_GiB", "nvml peak GiB"),
        ("reward_end", "reward end"), ("roofline_generation", "decode floor / gen"),
        ("roofline_step", "floor / step")]


def table(results: list[dict]) -> str:
    rows = [[str(r.get(k, "-")) for k, _ in COLS] for r in results]
    lines = ["| " + " | ".join(h for _, h in COLS) + " |", "|" + "---|" * len(COLS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    lines.append("| engine | " + " | ".join(["generation", "weight_sync", "reward", "logprob", "loss_forward",
                                              "rest"]) + " | import | load | trainer | first step | start→step 1 |")
    lines.append("|" + "---|" * 12)
    for r in results:
        ph, st = r["phases_median_s"], r["startup_s"]
        lines.append(f"| {r['engine']} | " + " | ".join("-" if v is None else str(v) for v in ph.values()) + " | "
                     + " | ".join(str(st[k]) for k in ("import", "engine_load", "trainer_build", "first_step",
                                                        "process_start_to_first_step_done")) + " |")
    return "\n".join(lines)


def main() -> None:
    a = parse()
    if a.one:
        res = run_one(a)
        Path(a.one_out).write_text(json.dumps(res, indent=1))
        print("RESULT", json.dumps(res), flush=True)
        os._exit(0)  # vLLM's engine threads can hang interpreter shutdown
    results, failures = [], {}
    for eng in a.engines.split(","):
        out = Path(tempfile.mkdtemp()) / f"{eng}.json"
        cmd = [sys.executable, __file__, *sys.argv[1:], "--one", eng, "--one-out", str(out)]
        print(f"== {eng}: {' '.join(cmd)}", flush=True)
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        if rc == 0 and out.is_file():
            results.append(json.loads(out.read_text()))
        else:
            failures[eng] = rc
    print(table(results) if results else "no results")
    by = {r["engine"]: r for r in results}
    ratios = {}
    if "unsloth" in by and "trl-vllm" in by:
        u, t = by["unsloth"], by["trl-vllm"]
        ratios = {"step_time_unsloth_over_trl_vllm": round(u["step_s_median"] / t["step_s_median"], 3),
                  "speedup_unsloth_vs_trl_vllm": round(t["step_s_median"] / u["step_s_median"], 3),
                  "peak_nvml_unsloth_over_trl_vllm": round(u["peak_nvml_used_GiB"] / t["peak_nvml_used_GiB"], 3),
                  "peak_torch_unsloth_over_trl_vllm": round(u["peak_torch_alloc_GiB"] / t["peak_torch_alloc_GiB"], 3)}
        print("ratios:", json.dumps(ratios))
    if failures:
        print("failed:", failures)
    if a.out:
        Path(a.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                           "argv": sys.argv, "results": results, "ratios": ratios,
                                           "failures": failures}, indent=1))
    sys.exit(1 if failures and not results else 0)


if __name__ == "__main__":
    main()
