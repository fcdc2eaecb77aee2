"""Reward functions on a table of tricky completions."""

import pytest

from grpo_job import rewards

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


def test_correctness_uses_last_answer_block_and_needs_one():
    two = "<answer>1</answer> wait <answer>2</answer>"
    assert rewards.correctness_reward([two, "2"], answer=["2", "2"]) == [1.0, 0.0]


def test_odd_inputs_never_raise():
    odd = [None, 42, {"content": None}, [{"role": "assistant"}], "<answer>\x00</answer>", "<answer>" * 1000]
    for name, fn in rewards.REGISTRY.items():
        out = fn(odd, answer=["1"] * len(odd))
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
    with pytest.raises(ImportError, match="cannot import module 'no_such_module'"):
        rewards.resolve("no_such_module:f")
    with pytest.raises(ImportError, match="has no function 'nope'"):
        rewards.resolve("my_rewards:nope")
    with pytest.raises(LookupError, match="unknown reward 'nope'"):
        rewards.resolve("nope")
