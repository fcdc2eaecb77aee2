"""One real pod's life on CPU (SmolLM2-135M-Instruct, real GRPO steps, a local store), in three runs
of `entrypoint.py run --log_format=json`:

1. SIGTERM during step 2, which cannot end within the grace budget (save_steps is far away): the
   step is interrupted before its update, checkpoint-1 (the last finished step) is saved, exit 75;
2. the rerun resumes from checkpoint-1 (the resume check proves LoRA, optimizer and scheduler equal
   the saved ones), finishes training, re-executes itself for the later stages, and is sent SIGTERM
   during `evaluate_trained`, which cannot end within its budget: exit 75, no marker;
3. the third run completes that stage and the rest, exit 0.

Every line the three runs write to stdout and stderr is one JSON object, and each run ends with a
closing line naming its exit code and where its artifacts are."""

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grpo_job import errors
from tests.job_env import job_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
ARGS = ("--train.max_steps=2", "--train.save_steps=100", "--export.merge=false", "--health.preflight_samples=0",
        "--evaluation.cpu_samples=2", "--evaluation.max_new_tokens=16", "--report.enabled=false",
        '--rewards={"tests.reward_fixtures:length_reward": 1.0}')


class Job:
    """`entrypoint.py run` in a subprocess; every output line kept, with the stream it came from."""

    def __init__(self, tmp_path: Path, *extra: str):
        cmd = [sys.executable, str(ROOT / "entrypoint.py"), "run", "--config", str(ROOT / "examples/smoke.yaml"),
               f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'work'}", "--log_format=json", *ARGS,
               *extra]
        env = job_env(tmp_path)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        self.lines: list[tuple[str, str]] = []
        self._readers = [threading.Thread(target=self._read, args=(s, n), daemon=True)
                         for s, n in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr"))]
        for r in self._readers:
            r.start()

    def _read(self, stream, name: str) -> None:
        for line in stream:
            self.lines.append((name, line))

    def records(self) -> list[dict]:
        return [json.loads(line) for _, line in list(self.lines) if line.startswith("{")]

    def messages(self) -> list[str]:
        return [r.get("msg", "") for r in self.records()]

    def wait_for(self, what: str, timeout: float = 1200) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(what in m for m in self.messages()):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"the job ended (rc {self.proc.returncode}) before {what!r}:\n{self.tail()}")
            time.sleep(0.1)
        self.proc.kill()
        raise AssertionError(f"timed out waiting for {what!r}:\n{self.tail()}")

    def wait(self, timeout: float = 1800) -> int:
        rc = self.proc.wait(timeout=timeout)
        for r in self._readers:
            r.join(timeout=10)
        return rc

    def tail(self) -> str:
        return "".join(line for _, line in self.lines[-40:])

    def check_json_only_and_closing(self, code: int) -> dict:
        """Every line parses as one JSON object; the last is the closing line for `code`."""
        bad = [(name, line) for name, line in self.lines if not _is_json_object(line)]
        assert not bad, f"{len(bad)} lines are not JSON objects, e.g. {bad[:3]}"
        last = self.records()[-1]
        assert last["exit_code"] == code and last["meaning"] == errors.MEANING[code], last
        assert last["run_id"] == "smoke" and f"exit {code}" in last["msg"]
        return last


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_a_pods_life_interrupted_step_resume_fresh_process_stop_in_a_later_stage(tmp_path):
    store = tmp_path / "runs" / "smoke"

    # 1) SIGTERM during step 2, far longer than the 5 s grace budget on a CPU
    first = Job(tmp_path, "--stop.grace_seconds=5")
    first.wait_for("step 1/2")
    t0 = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)
    assert first.wait() == errors.EXIT_RETRY, first.tail()
    assert time.monotonic() - t0 < 8  # about the grace budget (the watchdog ends the process at 5 s)
    assert any("interrupted before its update; saving checkpoint-1" in m for m in first.messages()), first.tail()
    assert (store / "checkpoints/checkpoint-1/manifest.json").is_file()
    assert not (store / "checkpoints/checkpoint-2").exists() and not (store / "stages/train.json").exists()
    saved = json.loads((store / "checkpoints/checkpoint-1/trainer_state.json").read_text())
    assert saved["global_step"] == 1  # the interrupted step is not counted as done
    first.check_json_only_and_closing(errors.EXIT_RETRY)

    # 2) resume: the loaded state is the saved one; step 2 is redone; then a fresh process
    second = Job(tmp_path, "--stop.grace_seconds=0.5")
    second.wait_for("stage evaluate_trained: start")
    second.proc.send_signal(signal.SIGTERM)  # the same PID after the re-exec
    assert second.wait() == errors.EXIT_RETRY, second.tail()
    recs = second.records()
    resumed = [r for r in recs if "resume" in r]
    assert resumed and resumed[0]["resume"]["step"] == 1 and resumed[0]["resume"]["lora_tensors"] > 0
    steps = [r["metrics"]["step"] for r in recs if "loss" in r.get("metrics", {})]
    assert steps == [2]
    msgs = second.messages()
    fresh = next(i for i, m in enumerate(msgs) if "start in a fresh process" in m)
    # the new process logs its start again and skips train, which the old one finished
    assert any(m.startswith("run smoke: store") for m in msgs[fresh:])
    assert any(m == "stage train: already done, skipped" for m in msgs[fresh:])
    assert (store / "stages/train.json").is_file() and not (store / "stages/evaluate_trained.json").exists()
    second.check_json_only_and_closing(errors.EXIT_RETRY)

    # 3) the rerun completes the interrupted stage
    third = Job(tmp_path)
    assert third.wait() == errors.EXIT_OK, third.tail()
    assert (store / "stages/evaluate_trained.json").is_file()
    closing = third.check_json_only_and_closing(errors.EXIT_OK)
    assert closing["artifacts"]["adapter"] == f"{store}/adapter"
