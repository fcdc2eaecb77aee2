"""The `code` reward against adversarial programs, through `code_reward` as TRL calls it: each scores what it
earned, the job's process stays healthy (its secret never reaches the program, no file outside the run's
directory is written, no process is left), and the whole batch finishes within the limits."""

import os
import re
import time
from pathlib import Path

import pytest

from grpo_job import rewards, sandbox
from grpo_job.errors import SettingsError
from grpo_job.rewards import code as code_mod
from tests.job_env import job_env

TESTS = ["assert f([1, 2, 3]) == 6", "assert f([]) == 0", "assert f([-1, 5]) == 4"]
SECRET = "hf_sandbox_test_secret_9f3a"


def fenced(body: str) -> str:
    return f"Here it is:\n```python\n{body}\n```\n"


def adversaries(outside: Path) -> list[tuple[str, str, float]]:
    """(case, completion, score it earned). `outside`: a directory of the job's the program must not write to."""
    return [
        ("correct", fenced("def f(xs):\n    return sum(xs)"), 1.0),
        ("wrong", fenced("def f(xs):\n    return len(xs)"), 1 / 3),  # len: right on [] only
        ("infinite loop", fenced("while True:\n    pass"), 0.0),
        ("infinite loop in f", fenced("def f(xs):\n    while True:\n        pass"), 0.0),
        ("fork bomb", fenced("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"), 0.0),
        ("huge output", fenced("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"), 0.0),
        ("10 GB allocation", fenced("x = bytearray(10 * 1024 ** 3)\ndef f(xs):\n    return sum(xs)"), 0.0),
        ("reads the secret", fenced("import os\nS = os.environ.get('HF_TOKEN', '')\n"
                                    "def f(xs):\n    return sum(xs) if S else -1"), 0.0),
        ("writes outside", fenced(f"open({str(outside / 'pwned')!r}, 'w').write('x')\n"
                                  "def f(xs):\n    return sum(xs)"), 0.0),
        ("exits before the tests", fenced("import sys\nprint('PASS')\nsys.exit(0)\ndef f(xs):\n    return 0"), 0.0),
        ("os._exit before the tests", fenced("import os\nos._exit(0)"), 0.0),
        ("rebinds assert", fenced("import builtins\nbuiltins.AssertionError = type('E', (Exception,), {})\n"
                                  "AssertionError = builtins.AssertionError\ndef f(xs):\n    return 0"), 1 / 3),
        ("deletes files and prints PASS", fenced("import os, shutil\nfor n in os.listdir('.'):\n"
                                                 "    shutil.rmtree(n, ignore_errors=True)\nprint('PASS ' * 10)"), 0.0),
        ("no program", "I cannot solve this.", 0.0),
    ]


def _children() -> set[int]:
    me = os.getpid()
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and int(entry) != me:
                out.add(int(entry))
    return out


def _sandbox_processes() -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "sandbox_child.py" in cmd and str(os.getpid()) not in cmd:
                found.append(cmd)
    return found


def test_adversarial_programs_score_what_they_earned(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    outside = tmp_path / "job-files"
    outside.mkdir()
    cases = adversaries(outside)
    before = _children()
    t0 = time.monotonic()
    scores = rewards.code_reward([c for _, c, _ in cases], tests=[TESTS] * len(cases), seconds_per_case=1.0,
                                 memory_mb=256)
    seconds = time.monotonic() - t0
    got = {name: round(s, 3) for (name, _, _), s in zip(cases, scores, strict=True)}
    want = {name: round(w, 3) for name, _, w in cases}
    assert got == want
    assert not (outside / "pwned").exists()  # Landlock (here) refused the write; the score says nothing of it
    # limits: 1 s per case, 3 cases + the program's start + 2 s startup = 6 s per run at most, runs 2 at a time
    # on this machine's cores: far below one run per case in a row
    assert seconds < 6.0 * len(cases) / sandbox.workers() + 10, seconds
    assert _children() == before  # every child reaped
    assert _sandbox_processes() == []  # nothing the programs started is left running
    assert rewards.code_reward([fenced("def f(xs):\n    return sum(xs)")], tests=[TESTS]) == [1.0]  # still healthy


@pytest.mark.parametrize("completion, tests, kwargs, want", [
    # stdin/stdout cases, whitespace-normalised
    (fenced("a, b = map(int, input().split())\nprint(a + b)"),
     [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5", "output": " 10 "}, {"input": "0 0", "output": "1"}], {}, 2 / 3),
    # APPS' form, as a JSON string
    (fenced("print(input()[::-1])"), '{"inputs": ["abc\\n", "xy\\n"], "outputs": ["cba\\n", "yx\\n"]}', {}, 1.0),
    # one string of asserts: all or nothing by construction
    (fenced("def f(x):\n    return x + 1"), "assert f(1) == 2\nassert f(2) == 4", {}, 0.0),
    # a list of strings as JSON text
    (fenced("def f(x):\n    return x + 1"), '["assert f(1) == 2", "assert f(2) == 4"]', {}, 0.5),
    # all_or_nothing
    (fenced("def f(x):\n    return x + 1"), ["assert f(1) == 2", "assert f(2) == 4"], {"all_or_nothing": True}, 0.0),
    # the answer block is the program when the completion has one (a fence inside it is removed)
    ("<reasoning>x</reasoning>\n<answer>\n```python\ndef f(x):\n    return x + 1\n```\n</answer>",
     ["assert f(1) == 2"], {}, 1.0),
    # the last ```python block is the program, not an untagged block of sample output after it (seen from
    # SmolLM2 on builtin:coding), nor a ```text one; with no tagged block the last block of any tag is
    ("Here:\n```python\ndef f(x):\n    return x + 1\n```\nOutput:\n```\n[2]\n```", ["assert f(1) == 2"], {}, 1.0),
    ("```py\ndef f(x):\n    return x + 1\n```\n```text\n2\n```", ["assert f(1) == 2"], {}, 1.0),
    ("```python\ndef f(x):\n    return x\n```\nBetter:\n```Python\ndef f(x):\n    return x + 1\n```",
     ["assert f(1) == 2"], {}, 1.0),
    ("```\ndef f(x):\n    return x\n```\nBetter:\n```\ndef f(x):\n    return x + 1\n```", ["assert f(1) == 2"], {}, 1.0),
    # ```python blocks run in order, as a notebook's cells: a right function, then a block of usage that calls it
    # (trial Y: the usage alone was the program, NameError, 0)
    ("```python\ndef f(x):\n    return x + 1\n```\nUsage:\n```python\nprint(f(1))\n```", ["assert f(1) == 2"], {}, 1.0),
    # a block that is no Python on its own (sample output tagged python; one cut off at the length limit) is left out
    ("```python\ndef f(x):\n    return x + 1\n```\n```python\nOutput: 2 (as expected)\n```", ["assert f(1) == 2"], {}, 1.0),
    ("```python\ndef f(x):\n    return x + 1\n```\n```python\ndef g(y):\n    return (y", ["assert f(1) == 2"], {}, 1.0),
    # usage that raises: the last block alone is the program then, and it defines nothing
    ("```python\ndef f(x):\n    return x + 1\n```\n```python\nf()\n```", ["assert f(1) == 2"], {}, 0.0),
    # the same inside an answer block (trial Z: its last block alone ran)
    ("<answer>\n```python\ndef f(x):\n    return x + 1\n```\n```python\nprint(f(1))\n```\n</answer>",
     ["assert f(1) == 2"], {}, 1.0),
    # a first attempt whose own asserts fail, then a right one (trial Z: the joined program raised at the first)
    ("```python\ndef f(x):\n    return x\nassert f(1) == 2\n```\nFixed:\n```python\ndef f(x):\n    return x + 1\n```",
     ["assert f(1) == 2"], {}, 1.0),
    # the better program counts, also for stdin/stdout cases
    ("```python\nimport sys\n```\n```python\nprint(int(input()) + 1)\n```", [{"input": "1", "output": "2"}], {}, 1.0),
    # a program that exits non-zero after the right output fails the case
    (fenced("print(3)\nraise SystemExit(1)"), [{"input": "", "output": "3"}], {}, 0.0),
    # the tests go through the program's time limit per case
    (fenced("import time\ndef f(x):\n    time.sleep(x)\n    return x"), ["assert f(0) == 0", "assert f(5) == 5"],
     {"seconds_per_case": 1.0}, 0.5),
])
def test_test_column_forms(completion, tests, kwargs, want):
    assert rewards.code_reward([completion], tests=[tests], **kwargs) == [pytest.approx(want)]


PYTEST_STYLE = "def test_one():\n    assert f(3) == 6\n\ndef test_two():\n    assert f(0) == 0"
UNITTEST_STYLE = ("import unittest\n\nclass TestF(unittest.TestCase):\n    def test_one(self):\n"
                  "        self.assertEqual(f(3), 6)\n    def test_two(self):\n        self.assertEqual(f(0), 0)\n\n"
                  "if __name__ == '__main__':\n    unittest.main()")
UNITTEST_ANY_NAME = ("import unittest\n\nclass RomanTests(unittest.TestCase):\n    def test_one(self):\n"
                     "        self.assertEqual(f(3), 6)")
SETUP_METHOD = ("class TestStack:\n    def setup_method(self, method):\n        self.s = [3]\n"
                "    def test_top(self):\n        assert f(self.s[-1]) == 6")
UNITTEST_IMPORTED = ("from unittest import TestCase\n\nclass TestBase(TestCase):\n    def helper(self):\n"
                     "        return 1\n\nclass TestF(TestBase):\n    def test_one(self):\n        self.assertEqual(f(3), 6)")
PLAIN_CLASS = "class TestF:\n    def test_one(self):\n        assert f(3) == 6\n    def helper(self):\n        raise RuntimeError"


@pytest.mark.parametrize("program, tests, want", [
    # test code that defines its tests: they were never called, so every program passed, an empty one too (trial)
    ("x = 1", [PYTEST_STYLE], 0.0),
    ("def f(x):\n    return x + x", [PYTEST_STYLE], 1.0),
    ("def f(x):\n    return 6", [PYTEST_STYLE], 0.0),  # test_two fails
    ("def f(x):\n    return 6", [PYTEST_STYLE, "assert f(3) == 6"], 0.5),
    ("x = 1", [UNITTEST_STYLE], 0.0),
    ("def f(x):\n    return 2 * x", [UNITTEST_STYLE], 1.0),
    ("def f(x):\n    return 6", [UNITTEST_STYLE], 0.0),
    ("x = 1", [PLAIN_CLASS], 0.0),
    ("def f(x):\n    return 2 * x", [PLAIN_CLASS], 1.0),  # only test* methods run: not `helper`
    # the program's own test_* names are not the tests': not called (one that fails would fail every test)
    ("def f(x):\n    return 2 * x\ndef test_sabotage():\n    raise SystemExit", ["assert f(1) == 2"], 1.0),
    # a test that needs a pytest fixture cannot run here: it fails, and check's dry call shows the reference failing
    ("def f(x):\n    return 2 * x", ["def test_tmp(tmp_path):\n    assert f(1) == 2"], 0.0),
    # what the test code imports is no test of its own: `TestCase` itself ran 0 tests and failed every program
    ("def f(x):\n    return 2 * x", [UNITTEST_IMPORTED], 1.0),
    ("x = 1", [UNITTEST_IMPORTED], 0.0),
    # a TestCase of any name runs (trial: `RomanTests` never ran, so an empty program earned 1.0)
    ("x = 1", [UNITTEST_ANY_NAME], 0.0),
    ("def f(x):\n    return 2 * x", [UNITTEST_ANY_NAME], 1.0),
    # a program that patches unittest to pass every TestCase earns nothing from it
    ("import unittest\nunittest.TestResult.wasSuccessful = lambda self: True\ndef f(x):\n    return 0",
     [UNITTEST_ANY_NAME], 0.0),
    ("import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\ndef f(x):\n    return 0",
     [UNITTEST_ANY_NAME], 0.0),
    # pytest's setup_method runs before each test method (trial: a right solution scored 0)
    ("def f(x):\n    return 2 * x", [SETUP_METHOD], 1.0),
    ("x = 1", [SETUP_METHOD], 0.0),
], ids=["pytest-empty", "pytest-right", "pytest-half-right", "pytest-and-assert", "unittest-empty", "unittest-right",
        "unittest-wrong", "class-empty", "class-right", "program-test-names", "fixture", "testcase-imported-right",
        "testcase-imported-empty", "unittest-any-name-empty", "unittest-any-name-right", "patches-wassuccessful",
        "patches-assertequal", "setup-method-right",
        "setup-method-empty"])
def test_test_functions_the_tests_define_are_called(program, tests, want):
    assert rewards.code_reward([fenced(program)], tests=[tests]) == [pytest.approx(want)]


HUMANEVAL = "METADATA = {}\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(0, 0) == 0\n"


@pytest.mark.parametrize("program, tests, entry_point, want", [
    # HumanEval's harness appends check(<entry_point>); without it every program passed (trial)
    ("def add(a, b):\n    return a + b", HUMANEVAL, "add", 1.0),
    ("pass", HUMANEVAL, "add", 0.0),
    ("def add(a, b):\n    return a * b", HUMANEVAL, "add", 0.0),
    ("def add(a, b):\n    return a + b", HUMANEVAL + "\ncheck(add)\n", "add", 1.0),  # called already: once
    ("pass", HUMANEVAL + "\ncheck(add)\n", "add", 0.0),
    ("pass", "assert True", "add", 1.0),  # no check() defined: nothing appended
], ids=["right", "empty", "wrong", "called-right", "called-empty", "no-check"])
def test_humaneval_tests_call_check_on_the_entry_point(program, tests, entry_point, want):
    assert rewards.code_reward([fenced(program)], tests=[tests], entry_point=[entry_point]) == [want]
    assert code_mod.humaneval_call(tests, "not an identifier()") == tests


def test_a_row_without_tests_is_skipped_and_a_missing_column_is_named():
    assert rewards.code_reward([fenced("pass")], tests=[None]) == [None]
    with pytest.raises(ValueError, match="column 'unit_tests'"):
        rewards.code_reward([fenced("pass")], tests_column="unit_tests", tests=[["pass"]])
    assert rewards.code_reward([fenced("x = 1")], tests_column="unit_tests", unit_tests=[["assert x == 1"]]) == [1.0]
    with pytest.raises(ValueError, match="a tests value must be"):
        code_mod.read_tests([1, 2])
    # a shape that fits no form is named by its keys (trial: `{"stdin", "stdout"}` cases)
    for value, said in [([{"stdin": "1", "stdout": "2"}], "a list whose case has keys ['stdin', 'stdout'], not 'input'"),
                        ({"asserts": ["x"]}, "an object with keys ['asserts']"),
                        ([["1", "2"]], "a list of lists (a case is an object with 'input' and 'output')"),
                        ([], "an empty list")]:
        with pytest.raises(ValueError) as e:
            code_mod.read_tests(value)
        assert said in str(e.value) and "APPS' {\"inputs\"" in str(e.value), str(e.value)


def test_built_by_name_with_arguments_checked():
    built = rewards.build("code", {"all_or_nothing": "true", "seconds_per_case": "2"})
    assert built.keywords == {"all_or_nothing": True, "seconds_per_case": 2.0}
    with pytest.raises(TypeError, match="seconds_per_case"):
        rewards.build("code", {"seconds_per_case": "soon"})


def test_the_generated_coding_task_is_solved_by_its_references():
    from grpo_job.data import generated as generated_tasks

    rows = generated_tasks.generate_coding(12, seed=3)
    refs = [f"<answer>\n{r['answer']}</answer>" for r in rows]
    assert rewards.code_reward(refs, tests=[r["tests"] for r in rows]) == [1.0] * len(rows)
    assert rewards.code_reward(["```python\ndef f(xs):\n    return None\n```"] * 2, tests=[r["tests"] for r in rows[:2]]) == [0.0, 0.0]


# ---------------------------------------------------------------- real training on CPU (slow)
@pytest.mark.slow
def test_one_real_grpo_step_on_the_generated_coding_task(tmp_path):
    """examples/code.yaml for one optimizer step (4 completions of one prompt, 48 tokens): the code reward runs
    inside TRL's training step through the sandbox, under its time limit, and its mean and seconds are logged."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = job_env(tmp_path, HF_TOKEN=SECRET)
    cmd = [sys.executable, str(root / "entrypoint.py"), "run", "--config", str(root / "examples" / "code.yaml"),
           "--log_format=json", f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'work'}",
           "--report.enabled=false", "--export.merge=false", "--health.preflight_samples=0", "--train.max_steps=1",
           "--train.save_steps=1", "--train.num_generations=4", "--train.per_device_train_batch_size=4",
           "--train.max_completion_length=48", "--data.max_samples=8"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    metrics = [json.loads(line) for line in (tmp_path / "runs" / "code" / "metrics.jsonl").read_text().splitlines()]
    step = next(m for m in metrics if "rewards/code_reward/mean" in m)
    assert 0.0 <= step["rewards/code_reward/mean"] <= 1.0
    assert 0.0 < step["rewards/code_reward/seconds"] < 120  # the sandbox ran, under health.reward_time_limit
    assert _sandbox_processes() == []


@pytest.mark.parametrize("arguments, message", [
    ({"memory_mb": 0}, "memory_mb=0 does not fit its type int (Input should be greater than or equal to 32)"),
    ({"seconds_per_case": -1}, "seconds_per_case=-1 does not fit its type float (Input should be greater than 0)"),
    ({"seconds_per_case": 0}, "seconds_per_case=0 does not fit"),
    ({"memory_mb": "lots"}, "memory_mb='lots' does not fit its type int"),
])
def test_limits_that_would_score_every_program_0_are_refused_when_the_reward_is_built(arguments, message):
    """Found by a new user's trial: memory_mb=0 or a negative time limit passed `check` and then scored a
    correct program 0 (the interpreter cannot start), silently."""
    from grpo_job.rewards import build

    with pytest.raises(TypeError, match=re.escape(message)):
        build("code", arguments)
    assert build("code", {"memory_mb": "64", "seconds_per_case": "0.5"})  # as an environment variable gives them
    with pytest.raises(TypeError) as both:  # every argument that does not fit, in one message (new-user trial)
        build("code", {"memory_mb": 1, "seconds_per_case": 0})
    assert "memory_mb=1 does not fit" in str(both.value) and "seconds_per_case=0 does not fit" in str(both.value)
    with pytest.raises(TypeError) as typo:  # an unknown argument no longer hides the others' problems
        build("code", {"tests_colum": "tests", "memory_mb": 1})
    assert "(did you mean 'tests_column' for 'tests_colum'?)" in str(typo.value)
    assert "also argument memory_mb=1 does not fit" in str(typo.value)
    with pytest.raises(TypeError) as factory:  # a factory's (TRL's get_soft_overlong_punishment) alike
        build("soft_overlong", {"max_completion_len": "abc", "soft_punish_cache": 3, "bogus_arg": 1})
    assert "unknown argument(s) ['bogus_arg']" in str(factory.value) and "max_completion_len='abc'" in str(factory.value)


def _check_data(tmp_path, rows, rewards_json):
    import json

    from grpo_job import preflight
    from grpo_job.settings import load_settings

    f = tmp_path / "tasks.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = load_settings(None, [f"--data.path={f}", "--data.task=plain", f"--rewards={rewards_json}",
                             "--evaluation.enabled=false"])
    return preflight.load_and_check_data(s, tmp_path / "cache", lambda: None)


def test_every_row_s_tests_and_schema_are_read_before_any_model_loads(tmp_path):
    """`check` called the rewards on 3 rows: 9 of 12 rows with tests in no form the reward reads passed it, and
    stopped `run` only at the preflight, after the model was loaded; one such row would have stopped training
    (new-user trial). Every row is read now."""
    good = {"prompt": "Write f.", "answer": "def f():\n    return 1\n", "tests": "assert f() == 1"}
    rows = [good] * 3 + [{**good, "prompt": f"Write g{i}.", "tests": {"case": i}} for i in range(9)]
    with pytest.raises(SettingsError, match=r"reward 'code' cannot read 9 of 12 rows .*got an object with keys \['case'\]"):
        _check_data(tmp_path, rows, '{"code": 1.0}')
    one = [good] * 11 + [{**good, "prompt": "Write h.", "tests": [1, 2]}]
    with pytest.raises(SettingsError, match=r"cannot read 1 of 12 rows .*got a list with an item of type int among its cases: \[1, 2\]"):
        _check_data(tmp_path, one, '{"code": 1.0}')
    # test code that does not compile, APPS cases of unequal lengths (a bare zip() error before): second trial
    typo = [good] * 5 + [{**good, "prompt": "Write k.", "tests": "assert f(1) == == 1"}]
    with pytest.raises(SettingsError, match=r"cannot read 1 of 6 rows .*the test code is not valid Python \(invalid syntax"):
        _check_data(tmp_path, typo, '{"code": 1.0}')
    apps = [good] * 5 + [{**good, "prompt": "Write m.", "tests": {"inputs": ["1\n", "2\n"], "outputs": ["1\n"]}}]
    with pytest.raises(SettingsError, match=r"one output per input; got 2 inputs and 1 outputs"):
        _check_data(tmp_path, apps, '{"code": 1.0}')
    schema = '{"type": "object", "required": ["name"]}'
    person = {"prompt": "Who?", "answer": '{"name": "Ava"}', "schema": schema}
    broken = [person] * 5 + [{**person, "prompt": "Who else?", "schema": '{"type": "objekt"}'}]
    with pytest.raises(SettingsError, match=r"reward 'json_schema' cannot read 1 of 6 rows .*not valid"):
        _check_data(tmp_path, broken, '{"json_schema": 1.0}')
    train, heldout, _ = _check_data(tmp_path, [person] * 6, '{"json_schema": 1.0}')
    assert len(train) + len(heldout) == 6


@pytest.mark.parametrize(("key", "rewards_json", "message", "hint"), [
    # trial: a misspelt column argument blamed the data's rows (GRPO_DATA__PATH), not the setting
    ("unit_tests", '{"code": {"weight": 1.0, "tests_column": "unit_test"}}',
     "reward 'code' reads column 'unit_test' (tests_column), which no row of", "did you mean 'unit_tests'"),
    ("unit_tests", '{"code": 1.0}', "reads column 'tests' (tests_column)", None),  # the default, by the signature
    ("schema", '{"json_schema": {"weight": 1.0, "schema_column": "shema"}}',
     "reward 'json_schema' reads column 'shema' (schema_column), which no row of", "did you mean 'schema'"),
])
def test_a_column_argument_no_row_has_is_a_setting_to_fix(tmp_path, key, rewards_json, message, hint):
    row = {"prompt": "Write f.", "answer": '{"name": "Ava"}',
           key: "assert f() == 1" if key != "schema" else '{"type": "object"}'}
    with pytest.raises(SettingsError) as e:
        _check_data(tmp_path, [row] * 6, rewards_json)
    text = str(e.value)
    assert message in text and (hint in text if hint else "did you mean" not in text), text
    assert "set rewards." in text and "GRPO_DATA__PATH" not in text, text
    arg = "tests_column" if key != "schema" else "schema_column"  # and its variable (trial Y: env-only deployments)
    reward = "code" if key != "schema" else "json_schema"
    assert f"set rewards.{reward}.{arg} [GRPO_REWARDS__{reward.upper()}__{arg.upper()}] to the column" in text, text
    # the json_schema reward's schema argument stands in for the column (trial Z: only the column was named)
    assert ("or give the reward's json_schema argument (one for every row)" in text) is (reward == "json_schema"), text


def test_a_reference_solution_that_fails_its_own_tests_is_warned_about(tmp_path, caplog):
    """The dry call scored the reference solution 0 against its row's tests and said nothing: no model can earn
    that row (new-user trial)."""
    wrong = {"prompt": "Write add.", "answer": "def add(a, b):\n    return a + b\n", "tests": "assert add(1, 2) == 4"}
    right = {**wrong, "prompt": "Write add again.", "tests": "assert add(1, 2) == 3"}
    _check_data(tmp_path, [wrong, right, right, right], '{"code": 1.0}')
    assert "'code' scored 0 on the reference answer itself" in caplog.text and "add(1, 2) == 4" in caplog.text
    assert "(test 0: AssertionError" in caplog.text  # why, as the sandbox said it
    caplog.clear()  # tests the sandbox cannot run: the cause is named (trial: `import pytest`, said as a bare 0); on
    # every row it is exit 2 (trial Z: a warning, and `check` exited 0)
    needs = {**right, "tests": "import pytest\n\ndef test_add():\n    assert add(1, 2) == 3"}
    with pytest.raises(SettingsError, match=r"on every one of the 3 rows tried.*\(test 0: ModuleNotFoundError: No "
                                            r"module named 'pytest'\): no completion can earn it"):
        _check_data(tmp_path, [needs] * 4, '{"code": 1.0}')
    caplog.clear()
    _check_data(tmp_path, [right] * 4, '{"code": 1.0}')
    assert "scored 0 on the reference answer" not in caplog.text


@pytest.mark.parametrize("tests, warned", [
    ("def check(candidate):\n    assert candidate(1, 2) == 3", True),  # HumanEval's checker, never called
    ("def helper():\n    assert add(1, 2) == 3", True),  # defines a function nothing calls
    ("def check(candidate):\n    assert candidate(1, 2) == 3\ncheck(add)", False),
    ("def test_add():\n    assert add(1, 2) == 3", False),  # pytest's convention: called
    ("assert add(1, 2) == 3", False),
], ids=["humaneval-check", "uncalled-helper", "check-called", "pytest", "assert"])
def test_tests_that_an_empty_program_passes_are_warned_about(tmp_path, caplog, tests, warned):
    """Tests that call nothing pass every program with a code block; check's dry call tries `pass` on them: a warning
    for some rows, exit 2 when every row tried is such (trial Y: the run trained on them and exited 0)."""
    row = {"prompt": "Write add.", "answer": "def add(a, b):\n    return a + b\n", "tests": tests}
    good = {**row, "tests": "assert add(1, 2) == 3"}
    _check_data(tmp_path, [{**(row if i % 2 else good), "prompt": f"Write add {i}."} for i in range(12)],
                '{"code": 1.0}')
    said = [r.getMessage() for r in caplog.records if "does nothing" in r.getMessage()]
    assert bool(said) is warned, said
    if warned:  # every row it tried, more than the dry call's 3
        tried = re.search(r"'code' gave a program that does nothing \(`pass`\) 1.00 on (\d+) of (\d+) rows tried", said[0])
        assert tried and 3 < int(tried[1]) < int(tried[2]), said[0]  # the bad half, more rows than the dry call's 3
        assert "check(f)" in said[0]
        with pytest.raises(SettingsError, match=r"on 11 of 11 rows tried.*training learns nothing from this reward"):
            _check_data(tmp_path, [{**row, "prompt": f"Write add {i}."} for i in range(12)], '{"code": 1.0}')


def test_a_code_task_without_reference_solutions_needs_no_parsable_answers(tmp_path):
    """Empty answers in a code task scored by its tests alone (no correctness reward, evaluation off) were refused:
    "the correctness reward could never score these rows" (recipe trial). They are checked only where compared."""
    rows = [{"prompt": f"Write f{i}.", "answer": "", "tests": f"assert f{i}() == {i}"} for i in range(6)]
    train, heldout, summary = _check_data(tmp_path, rows, '{"code": 1.0}')
    assert len(train) + len(heldout) == 6 and summary["unparsable_answers"] is None
    with pytest.raises(SettingsError, match="correctness reward could never score these rows"):
        _check_data(tmp_path, rows, '{"code": 1.0, "correctness": 1.0}')


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_check_says_what_confines_the_code_reward_in_both_log_formats(fmt, tmp_path):
    """The plan names the sandbox's isolation whenever the code reward is configured: JSON mode (what `auto` picks
    in a container, read by a CI step) as well as text (trial: only the text plan had the line)."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "entrypoint.py"), "check", "--config", str(root / "examples/code.yaml"),
                        f"--log_format={fmt}", f"--store.uri={tmp_path / 'runs'}"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300, env=job_env(tmp_path, PYTHONPATH=str(root)))
    assert r.returncode == 0, r.stderr[-2000:]
    line = json.loads(r.stdout)["sandbox"] if fmt == "json" else \
        next(x for x in r.stdout.splitlines() if x.startswith("sandbox: "))
    assert line.removeprefix("sandbox: ").startswith("network ") and sandbox.describe() in line


@pytest.mark.parametrize("tests, where", [("while True:\n    pass", "test 0"),
                                          ("assert add(1, 2) == 3", "the program raised")])
def test_a_test_or_program_that_runs_past_its_time_limit_says_so(tests, where):
    """Trial Y: a hanging test was said as `_CaseTimeout: ` with nothing after it."""
    answer = "def add(a, b):\n    return a + b\n" + ("" if where == "test 0" else "while True:\n    pass\n")
    error = code_mod.first_error(f"```python\n{answer}```", {"tests": tests}, seconds_per_case=0.5)
    assert error is not None and error.startswith(where), error
    assert "TimeLimitExceeded: ran past its time limit of 0.5 s (the code reward's seconds_per_case)" in error, error
