"""`entrypoint.py run` in this process, with TRL's own block timings recorded: where a step's time goes.

    PROFILE_JSONL=/tmp/profile.jsonl GRPO_...=... python3 bench/profiled_job.py

TRL times its blocks with `trl.extras.profiling.ProfilingContext` (`vLLM.generate`, `sync_weights`,
`_calculate_rewards`, each reward function, `_get_per_token_logps_and_entropies`, `_prepare_inputs`,
`compute_loss`) but sends the durations to wandb, MLflow or Trackio only. This bench tool wraps
`ProfilingContext._log_metrics` to append each one to PROFILE_JSONL as `{"name", "step", "s"}`
(seconds; `step`: the trainer's global step when the block started), then runs the job unchanged.
A bench-only hook: the job itself never wraps TRL. bench/recipe_gpu.py `run --profile` uses it;
`recipe_gpu.py table` sums the blocks per step.

Each block also gets a line `{"name": "<block> gc", "step", "s", "full_collections"}`: the seconds Python's cyclic
garbage collector paused the process inside the block (`gc.callbacks`), and how many of those pauses were full
(generation 2) collections. vLLM's colocated engine does its per-sequence work in the trainer's Python thread, and
the collector's passes cost with the objects alive in it: this line says how much of `vLLM.generate` they take.

`PROFILE_GC_FREEZE=1` (bench/recipe_gpu.py's `job-gcfreeze`) moves every object alive when the first block starts
(the trainer, the model, the engine, the data) into the collector's permanent generation (`gc.freeze()`, what vLLM
does after its own start), so later passes skip them: what freezing the heap at the start of training would save.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class GcClock:
    """The seconds the cyclic garbage collector has paused this process so far, and its full collections."""

    def __init__(self) -> None:
        self.seconds, self.full, self._started = 0.0, 0, 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.full += info["generation"] == 2


def record_trl_timings(path: Path) -> None:
    from trl.extras import profiling

    clock = GcClock()
    original_enter, original = profiling.ProfilingContext.__enter__, profiling.ProfilingContext._log_metrics
    sink = path.open("a", buffering=1)

    freeze = os.environ.get("PROFILE_GC_FREEZE") == "1"

    def enter(self):
        nonlocal freeze
        if freeze:  # once, before the first block: the trainer and its engine are built by then
            gc.collect()
            gc.freeze()
            freeze = False
        self._gc_at_start = (clock.seconds, clock.full)
        return original_enter(self)

    def log_metrics(self, duration: float) -> None:
        name = self.name.split(".", 1)[-1]
        sink.write(json.dumps({"name": name, "step": self.step, "s": round(duration, 5)}) + "\n")
        gc_seconds, full = getattr(self, "_gc_at_start", (clock.seconds, clock.full))
        sink.write(json.dumps({"name": f"{name} gc", "step": self.step, "s": round(clock.seconds - gc_seconds, 5),
                               "full_collections": clock.full - full}) + "\n")
        original(self, duration)

    profiling.ProfilingContext.__enter__ = enter
    profiling.ProfilingContext._log_metrics = log_metrics


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from grpo_job import machine

    machine.probe()  # as the job does before any ML import (Triton's interpreter switch without a GPU)
    record_trl_timings(Path(os.environ["PROFILE_JSONL"]))
    from grpo_job.cli import main as job

    return job(["run"])  # argv given: no re-exec after train (the bench runs train only)


if __name__ == "__main__":
    sys.exit(main())
