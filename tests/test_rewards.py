"""Reward functions on a table of tricky completions; building rewards from settings entries
(parameterised, TRL's own by name, callable objects) and the names TRL logs them under."""

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_answers import TABLE

from grpo_job import rewards
from grpo_job.errors import SettingsError

ROOT = Path(__file__).resolve().parents[1]

GOOD = "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>"


def chat(text):
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    "text, fmt",
    [
        (GOOD, 1.0),
        ("  <reasoning>x</reasoning><answer>7</answer>\n", 1.0),
        ("<reasoning>x</reasoning>", 0.0),
        ("<answer>7</answer>", 0.0),
        ("Sure! <reasoning>x</reasoning><answer>7</answer>", 0.0),  # text before the format
        ("<reasoning>x</reasoning><answer>7</answer> and more", 0.0),  # text after it
        ("<answer>7</answer><reasoning>x</reasoning>", 0.0),  # wrong order
        ("<reasoning>a</reasoning><answer>1</answer><answer>2</answer>", 0.0),  # two answer blocks
        ("<reasoning>a</reasoning><reasoning>b</reasoning><answer>1</answer>", 0.0),  # two reasoning blocks
        ("<reasoning>a<answer>1</answer></reasoning><answer>1</answer>", 0.0),  # answer inside reasoning
        ("<reasoning>a</reasoning> x <answer>1</answer>", 0.0),  # text between the blocks
        ("<reasoning>\n</reasoning>\n\n<answer>\n1\n</answer>\n", 1.0),  # whitespace around them is fine
        ("", 0.0),
    ],
)
def test_format_reward(text, fmt):
    assert rewards.format_reward([text]) == [fmt]
    assert rewards.format_reward([chat(text)]) == [fmt]


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD, 1.0),
        ("<reasoning>only reasoning</reasoning>", 0.5),
        ("<answer>7</answer>", 0.5),
        ("<reasoning><reasoning>x</reasoning>", 0.25),  # duplicated tag earns nothing
        ("plain text", 0.0),
    ],
)
def test_partial_format_reward(text, expected):
    assert rewards.partial_format_reward([text]) == [expected]


@pytest.mark.parametrize(
    "answer_text, reference, expected",
    [
        ("72", "72", 1.0),
        ("72.0", "72", 1.0),
        ("$72", "72", 1.0),
        ("1,000", "1000", 1.0),
        ("1000", "1,000", 1.0),
        ("72 apples", "72", 1.0),
        ("5 + 67 = 72", "72", 1.0),
        ("-3", "-3", 1.0),
        ("3/4", "0.75", 1.0),
        ("71", "72", 0.0),
        ("seventy-two", "72", 0.0),
        ("", "72", 0.0),
        ("7/0", "7", 0.0),  # never raises on odd output
        ("1e400", "1", 0.0),
    ],
)
def test_correctness_compares_numbers(answer_text, reference, expected):
    completion = f"<reasoning>r</reasoning><answer>{answer_text}</answer>"
    assert rewards.correctness_reward([completion], answer=[reference]) == [expected]
    assert rewards.correctness_reward([chat(completion)], answer=[reference]) == [expected]


@pytest.mark.parametrize("prediction, reference, ok", TABLE)
def test_correctness_reward_table(prediction, reference, ok):
    """The answer-checker table through the reward, as TRL calls it (strings and chat messages)."""
    completion = f"<reasoning>r</reasoning>\n<answer>\n{prediction}\n</answer>"
    expected = [1.0 if ok else 0.0]
    assert rewards.correctness_reward([completion], answer=[reference]) == expected
    assert rewards.correctness_reward([chat(completion)], answer=[reference], prompts=["q"], trainer_state=None) == expected


def test_correctness_needs_an_answer_block_and_every_block_right():
    hedge = "<answer>1</answer> wait <answer>2</answer>"
    again = "<answer>2</answer> so <answer> 2 </answer>"
    assert rewards.correctness_reward([hedge, again, "2"], answer=["2", "2", "2"]) == [0.0, 1.0, 0.0]


def test_correctness_answer_type_bound_or_per_row():
    texts = ["<answer>Yes</answer>", "<answer>72.0</answer>"]
    assert rewards.correctness_reward(texts, answer=["yes", "72"]) == [1.0, 1.0]
    # exact keeps case (issue 23 item 12): the reference is written as the completion writes it
    assert rewards.correctness_reward(texts, answer=["Yes", "72"], answer_type="exact") == [1.0, 0.0]
    assert rewards.correctness_reward(texts, answer=["yes", "72"], answer_type="exact") == [0.0, 0.0]
    assert rewards.correctness_reward(texts, answer=["Yes", "72"], answer_type=["exact", "math"]) == [1.0, 1.0]
    # built from the settings: data.answer_type is bound, a dataset column of that name wins
    fn = rewards.build("correctness", answer_type="exact")
    assert rewards.callable_name(fn) == "correctness_reward"
    assert fn(texts, answer=["Yes", "72"]) == [1.0, 0.0]
    assert fn(texts, answer=["Yes", "72"], answer_type=["exact", "math"]) == [1.0, 1.0]


def test_odd_inputs_never_raise():
    odd = [None, 42, {"content": None}, [{"role": "assistant"}], "<answer>\x00</answer>", "<answer>" * 1000]
    for name, fn in rewards.REGISTRY.items():
        # the columns the code and json_schema rewards read, as a dataset gives them
        out = fn(odd, answer=["1"] * len(odd), tests=[["assert True"]] * len(odd), schema=['{"type": "object"}'] * len(odd))
        assert len(out) == len(odd), name
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in out), name


def test_integer_answer_reward():
    assert rewards.integer_answer_reward(["<answer>42</answer>", "<answer>forty</answer>", "42"]) == [1.0, 0.0, 0.0]


def test_resolve_registry_and_user_functions(tmp_path, monkeypatch):
    assert rewards.resolve("format") is rewards.format_reward
    (tmp_path / "my_rewards.py").write_text("def length(completions, **kw):\n    return [float(len(c)) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = rewards.resolve("my_rewards:length")
    assert fn(["ab", "c"]) == [2.0, 1.0]
    with pytest.raises(ImportError, match="cannot import module 'no_such_module'.*PYTHONPATH") as missing:
        rewards.resolve("no_such_module:f")
    assert "no_such_module.py in a folder on it" in str(missing.value)
    # the file's name where the module's goes (trial: `my_rewards.py:brevity`)
    for written, meant in [("my_rewards.py:length", "my_rewards:length"), ("pkg/mod.py:f", "pkg.mod:f")]:
        with pytest.raises(ImportError) as e:
            rewards.resolve(written)
        assert str(e.value).endswith(f"; name the module without .py: {meant}"), str(e.value)
    # a module that is there but imports one that is not: that one is named, no PYTHONPATH advice
    (tmp_path / "needs_dep.py").write_text("import no_such_dependency\n")
    with pytest.raises(ImportError, match="No module named 'no_such_dependency'") as dep:
        rewards.resolve("needs_dep:f")
    assert "PYTHONPATH" not in str(dep.value)
    with pytest.raises(ImportError, match="has no function 'nope'; its functions: length"):
        rewards.resolve("my_rewards:nope")
    # a misspelt function gets its close name, as a misspelt argument does (new-user trial)
    with pytest.raises(ImportError, match="has no function 'lenght'; did you mean my_rewards:length"):
        rewards.resolve("my_rewards:lenght")
    with pytest.raises(LookupError, match="unknown reward 'nope'"):
        rewards.resolve("nope")


@pytest.mark.parametrize("written, said", [
    ("my_reward:length", "cannot import module 'my_reward' (ModuleNotFoundError: No module named 'my_reward'); "
                         "did you mean my_rewards:length?"),
    ("my_rewards.length", "unknown reward 'my_rewards.length'; did you mean my_rewards:length? (a function of a "
                          "module of your own is named module:function)"),
    ("corectness", "unknown reward 'corectness'; did you mean 'correctness'?"),
    ("elsewhere:f", "Python finds modules on PYTHONPATH"),  # nothing close: where Python looks
])
def test_a_misnamed_reward_module_gets_the_name_meant(tmp_path, monkeypatch, written, said):
    """Trial: `mcq_rewards:f` for the module `mcq_reward` was told only "No module named", and `mcq_reward.f` only
    the list of built-in rewards (the settings say the same: test_settings.py)."""
    (tmp_path / "my_rewards.py").write_text("def length(completions, **kw):\n    return [1.0 for c in completions]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises((ImportError, LookupError)) as e:
        rewards.resolve(written)
    assert said in str(e.value), str(e.value)


# ---------------------------------------------------------------- building rewards from settings entries
def test_trl_rewards_by_name_and_alias():
    import trl.rewards

    for name in rewards.TRL_REWARDS:
        assert rewards.resolve(name) is getattr(trl.rewards, name)
    acc = rewards.build("accuracy_reward")
    assert rewards.callable_name(acc) == "accuracy_reward"  # TRL's metric key, as before the wrapper
    assert acc([[{"content": r"\boxed{\frac{1}{3}}"}]], solution=[r"\frac{1}{3}"]) == [1.0]
    soft = rewards.build("soft_overlong", {"max_completion_len": 100, "soft_punish_cache": 20})
    assert rewards.callable_name(soft) == "soft_overlong_punishment_reward"  # TRL's metric key
    assert soft(completion_ids=[[1] * 50, [1] * 90, [1] * 101]) == [0.0, -0.5, -1.0]


BOXED = [  # (completion, reference as the data holds it, TRL's accuracy reward with the job's solution)
    (r"\boxed{2}", r"2\sqrt{3}", 0.0),  # undelimited, math-verify read the reference as 2 and paid this
    (r"\boxed{2\sqrt{3}}", r"2\sqrt{3}", 1.0),
    (r"\boxed{\sqrt{2}}", r"\sqrt{2}", 1.0),  # undelimited: not parsed at all, so skipped (None)
    (r"\boxed{2}", r"(-2, 2)", 0.0),
    (r"\boxed{(-2, 2)}", r"(-2, 2)", 1.0),
    (r"\boxed{[3, 7]}", r"[3, 7]", 1.0),
    (r"\boxed{(2, \infty)}", r"(2, \infty)", 1.0),
    (r"\boxed{1}", r"x^2 + 2x + 1", 0.0),
    (r"\boxed{(x+1)^2}", r"x^2 + 2x + 1", 1.0),
    (r"\boxed{\frac{\sqrt{3}}{3}}", r"\frac{\sqrt{3}}{3}", 1.0),
    (r"\boxed{42}", "42", 1.0),
    (r"\boxed{\frac{3}{4}}", r"The answer is $\frac{3}{4}$.", 1.0),  # a delimited solution is read as written
    (r"\boxed{5}", r"so the total is \boxed{5}", 1.0),
]


@pytest.mark.parametrize("completion, reference, expected", BOXED, ids=[f"{r} <- {c}" for c, r, _ in BOXED])
@pytest.mark.parametrize("name", ["accuracy_reward", "reasoning_accuracy_reward"])
def test_trls_math_rewards_read_a_latex_reference_whole(name, completion, reference, expected):
    """TRL's math rewards parse `solution` with math-verify's defaults, which read undelimited LaTeX in part: the
    job gives them each reference delimited, from the data's `solution` or, without one, from `answer`."""
    reward = rewards.build(name)
    thought = "<think>\nworked\n</think>\n" if name == "reasoning_accuracy_reward" else ""  # it reads after </think>
    completions = [[{"role": "assistant", "content": thought + completion}]]
    assert reward(completions, answer=[reference]) == [expected]
    assert reward(completions, solution=[reference], answer=["unrelated"]) == [expected]  # the data's solution first


def test_only_a_bare_final_answer_is_delimited():
    assert rewards.delimited_solution(r"2\sqrt{3}") == r"$2\sqrt{3}$"
    assert rewards.delimited_solution(" 42 ") == "$42$"
    for as_written in (r"$\frac{1}{2}$", r"\(x\)", r"so \boxed{5}", "Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18",
                       "She had 16 eggs, ate three for breakfast and baked muffins with four more, " * 2):
        assert rewards.delimited_solution(as_written) == as_written  # delimited, or a worked solution


def test_trls_cosine_scaled_reward_reads_the_reference_from_answer_too():
    cosine = rewards.build("cosine_scaled", {"max_len": 100})
    assert rewards.callable_name(cosine) == rewards.callable_name(
        __import__("trl.rewards", fromlist=["x"]).get_cosine_scaled_reward(max_len=100))
    right, wrong = ([[{"role": "assistant", "content": c}]] for c in (r"\boxed{2\sqrt{3}}", r"\boxed{2}"))
    assert cosine(right, answer=[r"2\sqrt{3}"], completion_ids=[[1] * 50])[0] > 0
    assert cosine(wrong, answer=[r"2\sqrt{3}"], completion_ids=[[1] * 50])[0] < 0


def test_factory_and_function_arguments_are_checked():
    with pytest.raises(TypeError, match="get_soft_overlong_punishment.*max_completion_len"):
        rewards.build("soft_overlong")  # a factory needs its arguments
    with pytest.raises(TypeError, match="soft_punish_cahce"):
        rewards.build("soft_overlong", {"max_completion_len": 100, "soft_punish_cahce": 20})
    with pytest.raises(ValueError, match="max_penalty"):  # TRL's own check runs
        rewards.build("repetition_penalty", {"max_penalty": 1.0})
    fn = rewards.build("tests.reward_fixtures:weighted_length", {"scale": 2.0, "cap": 4})
    assert isinstance(fn, functools.partial) and rewards.callable_name(fn) == "weighted_length"
    assert fn(["ab", "abcdefgh"]) == [1.0, 2.0]
    with pytest.raises(TypeError, match=r"takes no argument\(s\) \['scael'\]"):
        rewards.build("tests.reward_fixtures:weighted_length", {"scael": 2.0})  # **kwargs does not swallow it
    with pytest.raises(TypeError, match="takes no argument"):
        rewards.build("format", {"strict": True})


def test_a_reward_class_is_built_with_the_entrys_arguments():
    """`module:Class` with arguments, from the environment as text (trial: the class itself was called as the
    reward, and the advice was to add **kwargs to it)."""
    built = rewards.build("tests.reward_fixtures:LabelMatch", {"bonus": "0.5", "case_sensitive": "false"})
    assert rewards.callable_name(built) == "LabelMatch"  # TRL logs the instance by its class name
    assert built(["Positive", "negative"], answer=["positive", "positive"]) == [1.5, 0.0]
    assert rewards.build("tests.reward_fixtures:LabelMatch")(["x"], answer=["X"]) == [0.0]  # the defaults
    with pytest.raises(TypeError, match=r"argument bonus='lots' does not fit its type float"):
        rewards.build("tests.reward_fixtures:LabelMatch", {"bonus": "lots"})
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['bonnus'\] \(did you mean 'bonus'"):
        rewards.build("tests.reward_fixtures:LabelMatch", {"bonnus": 1})


def test_callable_objects_are_named_as_trl_names_them():
    obj = rewards.build("tests.reward_fixtures:difficulty_bonus")
    assert rewards.callable_name(obj) == "DifficultyBonus"
    assert obj(["a", "b"], difficulty=[1, 3]) == pytest.approx([0.1, 0.3])
    assert rewards.is_async(rewards.build("tests.reward_fixtures:async_tag_reward"))
    assert not rewards.is_async(rewards.build("correctness"))


class _AsyncCall:
    async def __call__(self, completions, **kwargs):
        return [1.0] * len(completions)


def _plain(completions, **kwargs):
    return [0.0] * len(completions)


async def _coroutine(completions, **kwargs):
    return [0.0] * len(completions)


REWARD_FORMS = {  # every form a reward takes, by a stable test id (pytest-xdist's workers must agree on them)
    "function": _plain, "async function": _coroutine, "partial": functools.partial(_plain),
    "partial of a partial of an async function": functools.partial(functools.partial(_coroutine)),
    "object with an async __call__": _AsyncCall(), "partial of an async object": functools.partial(_AsyncCall()),
    "renamed function": rewards.named(_plain, "renamed"), "renamed async function": rewards.named(_coroutine, "x"),
    "builtin correctness": "correctness",
    "TRL factory soft_overlong": ("soft_overlong", {"max_completion_len": 100, "soft_punish_cache": 20}),
    "TRL think_format_reward": "think_format_reward",
    "user object": "tests.reward_fixtures:difficulty_bonus", "user object without __name__": "tests.reward_fixtures:shortness",
    "user async function": "tests.reward_fixtures:async_tag_reward",
    "user function with arguments": "tests.reward_fixtures:weighted_length",
}


@pytest.mark.parametrize("form", list(REWARD_FORMS.values()), ids=list(REWARD_FORMS))
def test_reward_names_and_async_match_trls_own(form):
    """The job names rewards and tells async ones without importing TRL (a 6-15 s import in the fresh
    evaluation process); TRL's own functions are the reference, for every form a reward takes."""
    from trl.trainer.utils import get_callable_name, is_async_callable

    func = rewards.build(form) if isinstance(form, str) else rewards.build(*form) if isinstance(form, tuple) else form
    assert rewards.callable_name(func) == get_callable_name(func)
    assert rewards.is_async(func) is is_async_callable(func)


def test_scoring_the_runs_rewards_imports_no_trl(tmp_path):
    """The evaluate stages score the run's rewards (`RunContext.rewards`, under the time limit) in the process the
    job re-executes after training: naming, renaming, timing and calling them imports no TRL (measured on the H100:
    evaluate_trained spent 14 s after generation, against 1.7 s for evaluate_base, whose process had TRL already)."""
    code = (
        "import sys; from grpo_job import rewards; from grpo_job.rewards import calls; "
        "built = rewards.distinct_names(rewards.build_all({'format': 0.5, 'correctness': 2.0, "
        "'tests.reward_fixtures:async_tag_reward': 1.0, 'tests.reward_fixtures:difficulty_bonus': 1.0})); "
        "rows = [{'prompt': 'What is 2+3?', 'answer': '5', 'difficulty': 1}]; "
        "print(calls.check_rewards(built, rows, ['<reasoning>x</reasoning><answer>5</answer>'], light=True, "
        "time_limit=30.0)); print('TRL', 'trl' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert "'correctness': [1.0]" in r.stdout and "TRL False" in r.stdout, r.stdout


def test_rewards_trl_would_log_under_one_name_keep_their_settings_names(monkeypatch, tmp_path):
    """Two modules' `length_reward` (trial: `a:has_final_line` and `b:has_final_line`) were one TRL metric,
    `rewards/length_reward/mean`, and one curve in the report; the rest keep TRL's names."""
    import asyncio
    import inspect

    (tmp_path / "mine.py").write_text(
        "def length_reward(completions, scale=1.0, **kwargs):\n    return [scale * len(c) for c in completions]\n"
        "async def async_tag_reward(completions, **kwargs):\n    return [2.0 for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    s = _settings('{"tests.reward_fixtures:length_reward": 1.0, "mine:length_reward": {"weight": 0.5, "scale": 2}, '
                  '"tests.reward_fixtures:async_tag_reward": 1.0, "mine:async_tag_reward": 1.0, "correctness": 1.0}')
    built = rewards.distinct_names(rewards.build_all(s.rewards, s.data.answer_type))  # RunContext.rewards
    assert rewards.log_names(built) == {name: name for name in built if name != "correctness"} | {
        "correctness": "correctness_reward"}
    assert built["mine:length_reward"](["ab", "c"]) == [4.0, 2.0]  # its bound arguments kept
    assert inspect.signature(built["mine:length_reward"]).parameters["scale"].default == 2  # the reward's own, bound
    assert rewards.is_async(built["mine:async_tag_reward"]) and asyncio.run(built["mine:async_tag_reward"](["x"])) == [2.0]
    assert built["correctness"] is not None and rewards.callable_name(built["correctness"]) == "correctness_reward"


def _settings(rewards_json, *more):
    from grpo_job.settings import load_settings

    return load_settings(None, [f"--rewards={rewards_json}", "--data.path=builtin:arithmetic", *more])


def test_settings_entry_form_and_plain_weights():
    s = _settings('{"correctness": 2.0, "soft_overlong": {"weight": 0.5, "max_completion_len": 64, '
                  '"soft_punish_cache": 16}}', "--data.answer_type=math")
    assert [rewards.weight(v) for v in s.rewards.values()] == [2.0, 0.5]
    assert s.rewards["soft_overlong"].kwargs == {"max_completion_len": 64, "soft_punish_cache": 16}
    built = rewards.build_all(s.rewards, s.data.answer_type)
    assert [rewards.callable_name(f) for f in built.values()] == ["correctness_reward", "soft_overlong_punishment_reward"]
    assert built["correctness"].keywords == {"answer_type": "math"}


def test_a_bad_reward_value_is_one_problem_at_its_own_path(monkeypatch):
    """Not two, under pydantic's union branch names (`GRPO_REWARDS__FORMAT__FLOAT`, `...__REWARDENTRY`)."""
    from grpo_job.settings import load_settings

    monkeypatch.setenv("GRPO_REWARDS__FORMAT", "abc")
    for value in (None, '{"format": {"weight": "heavy"}}'):
        with pytest.raises(SettingsError) as e:
            load_settings(None, [f"--rewards={value}"] if value else [])
        text = str(e.value)
        # named by its source (issue 23 item 12): the variable, or the command line that overrides it
        source = "[--rewards on the command line]" if value else "[GRPO_REWARDS__FORMAT]"
        assert "(1 problem)" in text and f"rewards.format {source}" in text, text
        assert "FLOAT" not in text and "REWARDENTRY" not in text and "{weight: 1.0" in text


@pytest.mark.parametrize(
    "entry, message",
    [
        ('{"nope": 1.0}', "unknown reward 'nope'"),
        ('{"correctnes": 1.0}', "did you mean 'correctness'"),
        ('{"correctness": {"weight": "heavy"}}', "weight"),
    ],
)
def test_settings_entry_errors_are_early_and_name_the_fix(entry, message):
    with pytest.raises(SettingsError, match=message) as e:
        _settings(entry)
    assert "rewards" in str(e.value).lower()


@pytest.mark.parametrize(
    "entry, message",
    [
        ('{"soft_overlong": {"weight": 1.0}}', "needs its arguments"),
        ('{"soft_overlong": {"weight": 1.0, "max_completion_len": 64, "soft_punish_cache": 16, "x": 1}}', "'x'"),
        ('{"correctness": {"weight": 1.0, "answer_typ": "exact"}}', "answer_typ"),
        ('{"soft_overlong": {"max_completion_len": "abc", "soft_punish_cache": 16}}',
         "max_completion_len='abc' does not fit its type int"),
        ('{"correctness": {"answer_type": "exactly"}}', "answer_type='exactly'"),
        # the list form is one type per row, from a dataset column: bound in an entry it broke every batch
        ('{"correctness": {"weight": 2, "answer_type": ["exact"]}}',
         "set rewards.correctness.answer_type to auto, math or exact"),
        ('{"tests.reward_fixtures:weighted_length": {"scale": "big"}}', "scale='big' does not fit its type float"),
        # YAML's `yes` (trial): a boolean is no number, annotated or by the default's kind
        ('{"soft_overlong": {"max_completion_len": true, "soft_punish_cache": 16}}',
         "max_completion_len=True does not fit its type int"),
        ('{"tests.reward_fixtures:weighted_length": {"scale": true}}', "scale=True does not fit its type float"),
    ],
)
def test_reward_arguments_are_checked_where_the_job_runs(entry, message):
    """Building a reward imports its code (TRL's rewards, a user module): `check` and `run` do it, the
    schema alone (a CI runner) does not."""
    from grpo_job.settings import environment

    found = environment.problems(_settings(entry))
    assert len(found) == 1 and message in found[0] and "GRPO_REWARDS" in found[0]


@pytest.mark.slow
def test_trl_trains_with_every_reward_form(tmp_path):
    """One real GRPO step on the smoke model with an async reward, a reward that returns None for some
    rows, a callable object, a parameterised plain function and TRL's own parameterised reward:
    TRL logs each under the name the guards watch, and the preflight reports each."""
    import json

    from test_e2e_cpu import run_job

    forms = {
        "tests.reward_fixtures:async_tag_reward": 0.5,
        "tests.reward_fixtures:odd_rows_skipped": 0.5,
        "tests.reward_fixtures:shortness": 0.5,
        "tests.reward_fixtures:weighted_length": {"weight": 1.0, "scale": 0.5, "cap": 64},
        "soft_overlong": {"weight": 1.0, "max_completion_len": 24, "soft_punish_cache": 8},
    }
    r = run_job(tmp_path, "--train.max_steps=1", "--train.save_steps=100", "--export.merge=false",
                "--evaluation.enabled=false", "--health.preflight_samples=4", "--data.answer_type=math",
                f"--rewards={json.dumps(forms)}")
    assert r.returncode == 0, r.stderr[-4000:]
    records = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    step = next(rec["metrics"] for rec in records if "metrics" in rec and "loss" in rec["metrics"])
    # the CLI's rewards replace the config's (no correctness from smoke.yaml)
    names = ["async_tag_reward", "Shortness", "weighted_length", "soft_overlong_punishment_reward"]
    assert not any(k.startswith("rewards/correctness") for k in step)
    for name in names:
        assert f"rewards/{name}/mean" in step, (name, sorted(step))
    # None is skipped (TRL's nanmean), never scored 0: 1.0, or no number at all (the trainer logs None, which
    # metrics leave out) when the step's one prompt has an odd answer
    assert step.get("rewards/odd_rows_skipped/mean") in (1.0, None)
    assert step["rewards/soft_overlong_punishment_reward/mean"] <= 0.0
    preflight = [rec["msg"] for rec in records if "reward preflight:" in rec.get("msg", "")]
    assert len(preflight) >= len(forms) and any("scored" in m for m in preflight)
    result = json.loads((tmp_path / "runs" / "smoke" / "stages" / "reward_preflight.json").read_text())
    assert set(forms) <= set(result["rewards"])


def test_reward_arguments_from_env_vars_arrive_as_their_types(monkeypatch):
    """Arguments set one by one from environment variables (a Kubernetes Job) reach TRL's factory and a
    user function as the numbers their signatures name."""
    from grpo_job.settings import load_settings

    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("GRPO_DATA__PATH", "builtin:arithmetic")
    monkeypatch.setenv("GRPO_REWARDS__SOFT_OVERLONG__MAX_COMPLETION_LEN", "100")
    monkeypatch.setenv("GRPO_REWARDS__SOFT_OVERLONG__SOFT_PUNISH_CACHE", "20")
    monkeypatch.setenv("GRPO_REWARDS__TESTS.REWARD_FIXTURES:WEIGHTED_LENGTH__SCALE", "2.5")
    s = load_settings(None, [])
    built = rewards.build_all(s.rewards)
    assert built["soft_overlong"](completion_ids=[[1] * 50, [1] * 90]) == [0.0, -0.5]
    assert built["tests.reward_fixtures:weighted_length"].keywords == {"scale": 2.5}


def test_a_module_name_whose_case_an_env_var_lost_says_how_to_keep_it(monkeypatch, tmp_path):
    from grpo_job.settings import environment, load_settings

    (tmp_path / "CamelRewards.py").write_text("def brevity(completions, **kwargs):\n    return [0.0] * len(completions)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("GRPO_REWARDS__CamelRewards:brevity", "1")
    found = environment.problems(load_settings(None, ["--data.path=builtin:arithmetic"]))
    assert len(found) == 1 and "cannot import module 'camelrewards'" in found[0]
    assert "GRPO_REWARDS__CamelRewards:brevity names it in lower case" in found[0]
    assert """GRPO_REWARDS='{"CamelRewards:brevity": 1.0}'""" in found[0]
    monkeypatch.delenv("GRPO_REWARDS__CamelRewards:brevity")
    monkeypatch.setenv("GRPO_REWARDS", '{"CamelRewards:brevity": 1.0}')  # the form the message gives works
    assert environment.problems(load_settings(None, ["--data.path=builtin:arithmetic"])) == []


def test_an_overlong_penalty_for_another_length_than_the_generation_limit_is_a_warning():
    s = _settings('{"soft_overlong": {"max_completion_len": 300, "soft_punish_cache": 64}}',
                  "--train.max_completion_length=256")
    assert any("rewards.soft_overlong.max_completion_len=300 differs from train.max_completion_length=256" in w
               for w in s.warnings())
    s = _settings('{"soft_overlong": {"max_completion_len": 256, "soft_punish_cache": 64}}',
                  "--train.max_completion_length=256")
    assert not any("max_completion_len" in w for w in s.warnings())


@pytest.mark.parametrize("name, top, cache, found", [
    ("soft_overlong", 512, 64, "0 for every completion"),  # 448 >= 256: no completion reaches the ramp
    ("get_soft_overlong_punishment", 4096, 512, "set rewards.get_soft_overlong_punishment.max_completion_len to 256"),
    ("soft_overlong", 256, -8, "must be between 0 and its max_completion_len (256)"),
    ("soft_overlong", 128, 200, "must be between 0 and its max_completion_len (128)"),
    ("soft_overlong", 200, 0, None),  # TRL: 0 is no ramp, -1 past max_completion_len
    ("soft_overlong", 300, 64, None),  # the ramp starts at 236 < 256: a warning only
])
def test_an_overlong_penalty_that_can_never_punish_is_an_error(name, top, cache, found):
    """A recipe copied with open-r1's lengths (4,096 tokens) onto a 256-token run scored 0 on every completion,
    with only a warning; a negative cache was accepted (new-user trial)."""
    entry = f'{{"{name}": {{"max_completion_len": {top}, "soft_punish_cache": {cache}}}, "correctness": 1.0}}'
    if found is None:
        assert _settings(entry, "--train.max_completion_length=256").rewards[name].kwargs["max_completion_len"] == top
        return
    with pytest.raises(SettingsError, match=re.escape(found)):
        _settings(entry, "--train.max_completion_length=256")


def test_trl_rewards_that_cannot_work_with_these_settings_are_named():
    """Passed `check` silently (recipe trial): a repetition penalty over 400-word n-grams on 48-token completions
    (always 0), a cosine schedule over 4,096 tokens on 48, TRL's <think> format reward under the job's
    <reasoning> system prompt (0 on every completion)."""
    for size in (400, 48):  # 48 words in 48 tokens at most: no n-gram of 48 can repeat (second trial: off by one)
        with pytest.raises(SettingsError, match=rf"rewards.repetition_penalty.ngram_size={size} leaves no room"):
            _settings(f'{{"correctness": 1.0, "repetition_penalty": {{"ngram_size": {size}, "max_penalty": -1.0}}}}',
                      "--train.max_completion_length=48")
    # max_len 0 divided by zero in `check` itself (exit 1, a traceback), -5 gave "-960% of its range" (second trial)
    for max_len in (0, -5):
        with pytest.raises(SettingsError, match=rf"rewards.cosine_scaled.max_len={max_len} must be at least 1"):
            _settings(f'{{"correctness": 1.0, "cosine_scaled": {{"max_len": {max_len}}}}}',
                      "--train.max_completion_length=48")
    # a ramp of 0 tokens ending at the limit: the fix is a ramp, not the limit it already has (second trial)
    with pytest.raises(SettingsError, match=r"give rewards.soft_overlong.soft_punish_cache a ramp, e.g. 6"):
        _settings('{"correctness": 1.0, "soft_overlong": {"max_completion_len": 48, "soft_punish_cache": 0}}',
                  "--train.max_completion_length=48")
    assert _settings('{"correctness": 1.0, "repetition_penalty": {"ngram_size": 3, "max_penalty": -1.0}}',
                     "--train.max_completion_length=48").rewards["repetition_penalty"].kwargs["ngram_size"] == 3
    warned = _settings('{"correctness": 1.0, "cosine_scaled": {"max_len": 4096}}', "--train.max_completion_length=48"
                       ).warnings()
    assert any("rewards.cosine_scaled.max_len=4096 differs from train.max_completion_length=48" in w and "1%" in w
               for w in warned), warned
    assert any("think_format_reward scores the <think>" in w for w in _settings('{"think_format_reward": 1.0}').warnings())
    asks = _settings('{"think_format_reward": 1.0}', "--data.system_prompt=Think in <think></think>, then answer.")
    assert not any("think_format_reward" in w for w in asks.warnings())


def test_the_readme_s_own_strings_example_prints_what_it_says():
    """README shows how to try the checker and a reward on your own strings (trial U found no way): each command
    prints what its comment says."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("To see how the checker and a reward read your own strings", 1)[1].split("```bash\n", 1)[1]
    block = block.split("```", 1)[0]
    commands = re.findall(r"\.venv/bin/python -c '(.*?)'\s+# (\S+)", block, re.DOTALL)
    assert len(commands) == 2, block
    for code, said in commands:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             cwd=Path(__file__).resolve().parents[1])
        assert out.stdout.strip() == said, (code, out.stdout, out.stderr[-1000:])
