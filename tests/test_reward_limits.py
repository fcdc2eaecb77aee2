"""Every reward runs under `health.reward_time_limit`: a hanging reward stops `check` with exit 2 naming it
within its limit, is interrupted in training with an error naming it, and each call's seconds are logged."""

import asyncio
import inspect
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grpo_job import rewards
from grpo_job.errors import EXIT_FAILURE, EXIT_INVALID, JobError, SettingsError
from grpo_job.rewards import calls as reward_calls
from grpo_job.rewards import limits
from grpo_job.settings import load_settings
from tests.job_env import job_env

ROOT = Path(__file__).resolve().parents[1]
HANGING = '''
import re
import time


def sleeps(completions, **kwargs):
    time.sleep(10 ** 6)


def swallows(completions, **kwargs):
    while True:
        try:
            time.sleep(10 ** 6)
        except Exception:  # a reward's own handler must not keep it alive
            pass


def regex(completions, **kwargs):  # a C call that holds the interpreter: only faulthandler's watchdog stops it
    re.match(r"(a+)+$", "a" * 64 + "!")
    return [0.0] * len(completions)
'''


def _module(tmp_path: Path) -> Path:
    (tmp_path / "hanging_rewards.py").write_text(HANGING)
    return tmp_path


@pytest.mark.parametrize("func", ["sleeps", "swallows"])
def test_check_exits_2_within_the_limit_naming_the_reward(tmp_path, func):
    env = job_env(tmp_path, PYTHONPATH=str(_module(tmp_path)))
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "check", "--config", str(ROOT / "examples" / "smoke.yaml"),
           "--log_format=text", f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'work'}",
           f'--rewards={{"hanging_rewards:{func}": 1}}', "--health.reward_time_limit=1.5"]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    seconds = time.monotonic() - t0
    assert p.returncode == EXIT_INVALID, p.stderr[-2000:]
    assert f"rewards.hanging_rewards:{func}" in p.stderr and "health.reward_time_limit=1.5 s" in p.stderr
    # the check's own work (imports, data, tokenizer) takes ~8 s on an idle 2-core VM and 80 s on a loaded one;
    # the reward adds its limit only (test_dry_call_reports_the_limit_once times that part alone)
    assert seconds < 200, seconds


def test_a_reward_that_holds_the_interpreter_ends_the_process(tmp_path):
    """No Python thread runs while `re` backtracks: faulthandler's C watchdog exits 1 with the stacks."""
    script = ("import hanging_rewards\nfrom grpo_job.rewards import limits\n"
              "limits.limited('regex', hanging_rewards.regex, 0.5, 2)(completions=['x'])\n")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{_module(tmp_path)}:{ROOT}"})
    assert p.returncode == 1 and "hanging_rewards.py" in p.stderr and "regex" in p.stderr
    assert time.monotonic() - t0 < 30


def test_limited_interrupts_logs_seconds_and_keeps_name_and_signature():
    logged = {}

    def slow(completions, answer, delay=0.0, **kwargs):
        time.sleep(delay)
        return [1.0] * len(completions)

    built = rewards.build("tests.test_reward_limits:named_reward", {"bonus": 0.5})
    wrapped = limits.limited("mine", built, 5)
    assert wrapped.__name__ == rewards.callable_name(built) == "named_reward"
    assert "bonus" in inspect.signature(wrapped).parameters
    assert wrapped(completions=["a"], log_metric=logged.__setitem__) == [1.5]
    assert 0 <= logged["rewards/named_reward/seconds"] < 1

    quick = limits.limited("slow", slow, 0.5)
    assert quick(completions=["a"], answer=["1"]) == [1.0]
    t0 = time.monotonic()
    with pytest.raises(limits.RewardTimeLimit) as e:
        quick(completions=["a"], answer=["1"], delay=30)
    assert time.monotonic() - t0 < 2
    assert isinstance(e.value, JobError) and e.value.exit_code == EXIT_FAILURE  # in training: a job error
    assert "reward 'slow'" in str(e.value) and "GRPO_HEALTH__REWARD_TIME_LIMIT" in str(e.value)
    assert quick(completions=["a"], answer=["1"]) == [1.0]  # the signal handler is back as it was


def named_reward(completions, bonus=0.0, **kwargs):
    return [1.0 + bonus] * len(completions)


def test_async_reward_and_a_reward_off_the_main_thread_are_limited():
    async def waits(completions, **kwargs):
        await asyncio.sleep(30)

    with pytest.raises(limits.RewardTimeLimit):
        asyncio.run(limits.limited("waits", waits, 0.3)(completions=["a"]))

    def spins(completions, **kwargs):
        while True:
            pass

    caught = []
    worker = threading.Thread(target=lambda: _catch(caught, limits.limited("spins", spins, 0.3), ["a"]))
    worker.start()
    worker.join(10)
    assert not worker.is_alive() and caught and isinstance(caught[0], limits.RewardTimeLimit)


def _catch(out, func, completions):
    try:
        func(completions=completions)
    except BaseException as e:  # noqa: BLE001 - the test records what ended the call
        out.append(e)


def test_dry_call_reports_the_limit_once(tmp_path):
    calls = []

    def hangs(completions, **kwargs):
        calls.append(len(completions))
        time.sleep(30)

    rows = [{"prompt": [{"role": "user", "content": "q"}], "answer": "1"}] * 3
    t0 = time.monotonic()
    with pytest.raises(SettingsError, match=r"rewards\.mine faster"):
        reward_calls.dry_call({"mine": hangs}, rows, time_limit=0.5)
    assert calls == [6] and time.monotonic() - t0 < 3  # no culprit search: one call, one limit


def test_the_setting():
    s = load_settings(None, ["--health.reward_time_limit=2.5"])
    assert s.health.reward_time_limit == 2.5
    assert load_settings(None, []).health.reward_time_limit == 120
    with pytest.raises(SettingsError, match="reward_time_limit"):
        load_settings(None, ["--health.reward_time_limit=0"])
