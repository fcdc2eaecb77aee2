"""The run report: per-step metrics, plots and a markdown summary in the run store (`report/`).

- `metrics.jsonl` (written by the train stage's step log, one record per logged step) holds each
  reward's mean, the total reward, completion length, KL, loss, grad norm, step time, tokens/s, ETA.
- The report stage draws `report/rewards.png` (each reward and the weighted total per step) and
  `report/completion_length.png` (mean, min-max band, share cut off), then writes `report/report.md`
  with the before/after evaluation, the reward change over training, the plots and the main settings.
- `report_markdown(store)` returns that markdown for the Hub model card (image paths prefixed).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpo_job import rewards
from grpo_job.context import StoreKeys, marker_key

if TYPE_CHECKING:
    from grpo_job.context import RunContext
    from grpo_job.store import RunStore

log = logging.getLogger(__name__)

PLOTS = ("rewards.png", "completion_length.png")


class StepTimer:
    """Step time, tokens/s and ETA between logged steps (for the step log and metrics.jsonl)."""

    def __init__(self) -> None:
        self.t0 = self.last_t = time.monotonic()
        self.step0 = self.last_step = 0
        self.last_tokens: float | None = None

    def start(self, step: int) -> None:
        self.t0 = self.last_t = time.monotonic()
        self.step0 = self.last_step = step

    def tick(self, step: int, max_steps: int, num_tokens: float | None) -> dict[str, float]:
        now = time.monotonic()
        out: dict[str, float] = {}
        if step > self.last_step:
            out["step_time"] = round((now - self.last_t) / (step - self.last_step), 3)
            if num_tokens is not None and self.last_tokens is not None and now > self.last_t:
                out["tokens_per_s"] = round((num_tokens - self.last_tokens) / (now - self.last_t), 1)
        if step > self.step0:
            out["eta_s"] = round((now - self.t0) / (step - self.step0) * max(max_steps - step, 0), 1)
        self.last_t, self.last_step, self.last_tokens = now, step, num_tokens
        return out


def fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


# ---------------------------------------------------------------- reading
def step_records(store: RunStore) -> list[dict[str, Any]]:
    """The per-step training records of metrics.jsonl (not the trainer's final summary record)."""
    if not store.exists(StoreKeys.METRICS):
        return []
    rows = [json.loads(line) for line in store.read_text(StoreKeys.METRICS).splitlines() if line.strip()]
    by_step = {r["step"]: r for r in rows if "reward" in r}  # a resumed run re-logs steps: keep the last
    return [by_step[k] for k in sorted(by_step)]


def _json(store: RunStore, key: str) -> dict[str, Any] | None:
    return store.read_json(key) if store.exists(key) else None


def reward_keys(records: list[dict[str, Any]]) -> list[str]:
    keys = {k for r in records for k in r if k.startswith("rewards/") and k.endswith("/mean")}
    return sorted(keys)


# ---------------------------------------------------------------- plots
def plot(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write the PNG plots for the step records; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display in a container
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir.mkdir(parents=True, exist_ok=True)
    steps = [r["step"] for r in records]
    paths = []

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key in reward_keys(records):
        ax.plot(steps, [r.get(key, math.nan) for r in records], label=key.split("/")[1], linewidth=1.2)
    ax.plot(steps, [r.get("reward", math.nan) for r in records], label="total (weighted)", color="black", linewidth=2)
    ax.set(xlabel="step", ylabel="mean reward", title="Rewards per step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # optimizer steps are whole (trial: 1.5, 2.5 on a short run)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / PLOTS[0])
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    mean = [r.get("completions/mean_length", math.nan) for r in records]
    ax.plot(steps, mean, label="mean", color="tab:blue", linewidth=2)
    if all("completions/min_length" in r and "completions/max_length" in r for r in records):
        ax.fill_between(steps, [r["completions/min_length"] for r in records],
                        [r["completions/max_length"] for r in records], alpha=0.2, color="tab:blue", label="min-max")
    ax.set(xlabel="step", ylabel="tokens", title="Completion length per step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if any("completions/clipped_ratio" in r for r in records):
        ax2 = ax.twinx()
        ax2.plot(steps, [r.get("completions/clipped_ratio", math.nan) for r in records], color="tab:red",
                 linewidth=1, linestyle="--", label="share cut off (right axis)")
        ax2.set(ylabel="share cut off at max_completion_length", ylim=(0, 1.05))
        ax2.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / PLOTS[1])
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


# ---------------------------------------------------------------- markdown
SHORT_RUN_STEPS = 6  # up to this many logged steps, the training table shows each one


def _window_means(records: list[dict[str, Any]], keys: list[str], n: int) -> tuple[dict, dict]:
    def mean(rows: list[dict], k: str) -> float:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
        return sum(vals) / len(vals) if vals else math.nan

    first, last = records[:n], records[-n:]
    return {k: mean(first, k) for k in keys}, {k: mean(last, k) for k in keys}


def _f(v: Any, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


# The evaluation numbers after the rewards (eval/<which>.json keys), with their labels
EVAL_ROWS = (("accuracy", "accuracy"), ("format_rate", "format compliance (whole format)"),
             ("partial_format", "partial format score (0-1)"), ("answer_tag_rate", "has an <answer> block"),
             ("clipped_rate", "cut off at max tokens"), ("mean_length", "mean completion length (tokens)"))


def evaluation_table_rows(base: dict, trained: dict) -> list[tuple[str, Any, Any, int]]:
    """(label, base value, trained value, digits) of the evaluation table: the rewards' weighted total, each
    reward's mean, then EVAL_ROWS; a number neither evaluation measured (the `<answer>` numbers of a task in
    another format, or an older run's missing rewards) is left out."""
    names = dict.fromkeys(k for e in (base, trained) for k in e.get("rewards") or {})
    rows = [("reward (weighted total)", base.get("reward"), trained.get("reward"), 3)]
    rows += [(f"reward {k}", (base.get("rewards") or {}).get(k), (trained.get("rewards") or {}).get(k), 3)
             for k in names]
    rows += [(label, base.get(key), trained.get(key), 1 if key == "mean_length" else 3) for key, label in EVAL_ROWS]
    return [r for r in rows if r[1] is not None or r[2] is not None]


def training_line(train: dict[str, Any]) -> str:
    """The report's line on the train stage (its marker, `stages/train.json`): steps and seconds; after a resume,
    only the attempt that finished is timed, so the line says which steps those seconds are (trial: "3 optimizer
    steps in 198.3 s" after a resume at step 2, when steps 1-2 had taken 8 minutes)."""
    steps, seconds, resumed = train.get("steps"), train.get("seconds"), train.get("resumed_from")
    if not resumed:
        return f"Training: {steps} optimizer steps in {seconds} s."
    ran = f"steps {resumed + 1}-{steps}" if isinstance(steps, int) and steps > resumed + 1 else f"step {steps}"
    return (f"Training: {steps} optimizer steps. The attempt that finished resumed from checkpoint-{resumed} and ran "
            f"{ran} in {seconds} s; the earlier attempts' time is not counted.")


def report_markdown(store: RunStore, image_prefix: str = "", ended: str | None = None,
                    settings_names: dict[str, str] | None = None) -> str:
    """The report as markdown, from what the run store holds (settings, evaluations, metrics).
    `image_prefix` is put before the plot file names (e.g. `report/` in a model card); `ended`: how a run
    that stopped before its report stage ended (a health guard's message); `settings_names`: the name TRL
    logs a reward under -> its name in `rewards`, where they differ (`correctness_reward` -> `correctness`),
    added to the training table's metric names."""
    saved = _json(store, StoreKeys.SETTINGS) or {}
    s = saved.get("settings", {})
    base, trained = _json(store, StoreKeys.evaluation("base")), _json(store, StoreKeys.evaluation("trained"))
    records = step_records(store)
    lines = ["# GRPO run report", ""]
    lines += [f"Run `{store.uri.rstrip('/').rsplit('/', 1)[-1]}`, settings fingerprint `{saved.get('fingerprint', '?')}`.", ""]
    if ended:
        lines += [f"**{ended}**", ""]
    train = _json(store, marker_key("train"))
    if train:
        lines += [training_line(train), ""]

    lines += ["## Evaluation before and after training", ""]
    if base or trained:
        src = s.get("evaluation", {}).get("data_path") or "the held-out split"
        n = (trained or base or {}).get("n")
        both = (base or {}, trained or {})
        how = ("; accuracy uses the correctness reward's extraction (every `<answer>` block equal to the reference, "
               "by the job's answer checker)" if any("accuracy" in e for e in both) else
               # (trial: a task scored by its own rewards alone wondered where accuracy went)
               "; no reward reads the `<answer>` format, so there is no accuracy row: each reward's mean is the "
               "measure (a reward scoring 0 or 1 per answer is its accuracy)")
        lines += [f"Greedy decoding on {n} examples of {src}, scored by the run's rewards{how}.", "",
                  "| metric | base | trained | change |", "|---|---|---|---|"]
        for label, b, t, d in evaluation_table_rows(*both):
            change = _f(t - b, d) if isinstance(b, (int, float)) and isinstance(t, (int, float)) else "–"
            lines.append(f"| {label} | {_f(b, d)} | {_f(t, d)} | {change} |")
    else:
        lines.append("No evaluation was run (evaluation.enabled is false, or the stages have not run yet).")
    lines.append("")

    lines += ["## Training", ""]
    if records:
        keys = ["reward", *reward_keys(records), "completions/mean_length", "loss", "kl", "grad_norm",
                "frac_reward_zero_std", "step_time", "tokens_per_s"]
        keys = [k for k in keys if any(k in r for r in records)]
        named = {k: f"{k} ({settings_names[k.split('/')[1]]})" for k in keys
                 if k.startswith("rewards/") and k.split("/")[1] in (settings_names or {})}
        # rewards are logged once per generation, which feeds train.steps_per_generation optimizer steps
        logged = f"Rewards logged at {len(records)} steps (one per generation; the last at step {records[-1]['step']})"
        if len(records) <= SHORT_RUN_STEPS:  # every logged step: first and last windows would hide the middle (trial)
            columns = [_window_means([r], keys, 1)[0] for r in records]
            lines += [f"{logged}:", "", "| metric | " + " | ".join(f"step {r['step']}" for r in records) + " |",
                      "|---|" + "---|" * len(records)]
            lines += [f"| {named.get(k, k)} | " + " | ".join(_f(c[k], 4) for c in columns) + " |" for k in keys]
        else:
            window = max(1, min(10, len(records) // 4))
            first, last = _window_means(records, keys, window)
            lines += [f"{logged}. Means over the first and the last {window} of them:", "",
                      f"| metric | first {window} | last {window} |", "|---|---|---|"]
            lines += [f"| {named.get(k, k)} | {_f(first[k], 4)} | {_f(last[k], 4)} |" for k in keys]
        lines += ["", f"![rewards per step]({image_prefix}{PLOTS[0]})", "",
                  f"![completion length per step]({image_prefix}{PLOTS[1]})", ""]
    else:
        lines += ["No training metrics recorded.", ""]

    lines += ["## Main settings", ""]
    m, t, lora, d = s.get("model", {}), s.get("train", {}), s.get("lora", {}), s.get("data", {})
    rows = [
        ("model", f"{m.get('name_or_path')}" + (f" ({m.get('gguf_file')})" if m.get("gguf_file") else "")),
        ("engine", m.get("engine")),
        ("data", f"{d.get('path')} (task {d.get('task')})"),
        ("rewards", ", ".join(f"{k} x{rewards.weight(v):g}" for k, v in s.get("rewards", {}).items())),
        ("LoRA", f"r={lora.get('r')} alpha={lora.get('lora_alpha')} on {', '.join(lora.get('target_modules', []))}"),
    ]
    rows += [(k, t.get(k)) for k in ("max_steps", "learning_rate", "lr_scheduler_type", "num_generations",
                                     "per_device_train_batch_size", "gradient_accumulation_steps",
                                     "max_completion_length", "temperature", "beta", "loss_type") if k in t]
    lines += ["| setting | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]
    return "\n".join(lines)


def run(ctx: RunContext, ended: str | None = None) -> dict[str, Any]:
    """Stage body: plots and report.md into `report/` in the run store (`ended`: see report_markdown)."""
    records = step_records(ctx.store)
    out = ctx.work_dir / "report"
    written = plot(records, out) if records else []
    (out / "report.md").parent.mkdir(parents=True, exist_ok=True)
    settings_names = {logged: name for name, logged in ctx.reward_log_names.items() if logged != name}
    (out / "report.md").write_text(report_markdown(ctx.store, ended=ended, settings_names=settings_names))
    keys = ctx.store.put_dir(out, ctx.keys.REPORT)
    log.info("report written to %s/report/ (%s)", ctx.store.uri, ", ".join(p.name for p in [*written, out / "report.md"]))
    return {"files": keys, "steps": len(records)}
