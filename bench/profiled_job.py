"""`entrypoint.py run` in this process, with TRL's own block timings recorded: where a step's time goes.

    PROFILE_JSONL=/tmp/profile.jsonl GRPO_...=... python3 bench/profiled_job.py

TRL times its blocks with `trl.extras.profiling.ProfilingContext` (`vLLM.generate`, `sync_weights`,
`_calculate_rewards`, each reward function, `_get_per_token_logps_and_entropies`, `_prepare_inputs`,
`compute_loss`) but sends the durations to wandb, MLflow or Trackio only. This bench tool wraps
`ProfilingContext._log_metrics` to append each one to PROFILE_JSONL as `{"name", "step", "s"}`
(seconds; `step`: the trainer's global step when the block started), then runs the job unchanged.
A bench-only hook: the job itself never wraps TRL. bench/recipe_gpu.py `run --profile` uses it;
`recipe_gpu.py table` sums the blocks per step.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def record_trl_timings(path: Path) -> None:
    from trl.extras import profiling

    original = profiling.ProfilingContext._log_metrics
    sink = path.open("a", buffering=1)

    def log_metrics(self, duration: float) -> None:
        sink.write(json.dumps({"name": self.name.split(".", 1)[-1], "step": self.step, "s": round(duration, 5)}) + "\n")
        original(self, duration)

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
