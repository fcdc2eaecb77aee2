"""Reward health: the preflight catches broken rewards (showing the completion that broke them), the
guards stop a real CPU run with exit code 3 after K steps without reward variance, and a CUDA
out-of-memory error becomes a message naming the settings to lower."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_job import cli, data, pipeline
from grpo_job import rewards as R
from grpo_job.errors import SettingsError
from grpo_job.rewards import calls as reward_calls
from grpo_job.settings import DataSettings, load_settings
from grpo_job.stages import stages as all_stages
from grpo_job.training import health
from tests.job_env import job_env

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "examples" / "smoke.yaml"


# ---------------------------------------------------------------- rewards used by the tests (module:function)
# The two broken on purpose below break only on text a model writes (untagged, not empty): the data check's
# synthetic completions (tagged, or empty) pass them, so only the preflight on real samples can catch them.
def raises_on_odd_answer(completions, answer, **kwargs):
    """Broken on purpose: fails on untagged output for prompts whose reference answer is odd."""
    from grpo_job.rewards import completion_text

    out = []
    for c, a in zip(completions, answer, strict=True):
        text = completion_text(c)
        if int(a) % 2 and text and "<answer>" not in text:
            raise ValueError(f"cannot score answer {a}")
        out.append(0.0)
    return out


def drops_untagged(completions, **kwargs):
    """Broken on purpose: skips untagged output, so the list comes out short."""
    from grpo_job.rewards import completion_text

    return [1.0 for c in completions if "<answer>" in completion_text(c) or not completion_text(c)]


def drops_empty(completions, **kwargs):
    """Broken on purpose: skips empty completions (a model that stopped at once), so the list comes out short."""
    from grpo_job.rewards import completion_text

    return [1.0 for c in completions if completion_text(c)]


def constant_reward(completions, **kwargs):
    """Every completion scores the same: zero variance in every group, deterministically."""
    return [0.5] * len(completions)


# ---------------------------------------------------------------- fast: the checks on known completions
ROWS = [{"prompt": [{"role": "user", "content": f"q{i}"}], "answer": str(a)} for i, a in enumerate([4, 7, 10])]


def test_check_rewards_names_the_raising_reward_and_shows_its_completion():
    texts = ["<answer>4</answer>", "I think it is 7", "<answer>10</answer>"]
    with pytest.raises(SettingsError) as e:
        reward_calls.check_rewards(["correctness", "tests.test_health:raises_on_odd_answer"], ROWS, texts)
    msg = str(e.value)
    assert "reward 'tests.test_health:raises_on_odd_answer' raised ValueError: cannot score answer 7" in msg
    assert "completion #1" in msg and "'I think it is 7'" in msg and "reference answer '7'" in msg


def test_check_rewards_catches_a_wrong_length_and_shows_the_completion():
    texts = ["<answer>4</answer>", "no tags here at all", "<answer>10</answer>"]
    with pytest.raises(SettingsError) as e:
        reward_calls.check_rewards(["tests.test_health:drops_untagged"], ROWS, texts)
    msg = str(e.value)
    assert "returned 2 scores for 3 completions" in msg
    assert "completion #1" in msg and "'no tags here at all'" in msg


def test_check_rewards_says_a_wrong_return_type_is_no_fault_of_one_completion():
    """A reward that returns one float, not a list, is wrong for any batch: the message says so instead of naming
    completion #0 (trial: that read as a fault of the first completion)."""
    texts = ["<answer>4</answer>", "x", "<answer>10</answer>"]
    with pytest.raises(SettingsError) as e:
        reward_calls.check_rewards({"mine": lambda completions, **kw: 1.0}, ROWS, texts)
    msg = str(e.value)
    assert "reward 'mine' returned float, not a list of floats, for a batch of 3 completions and for one alone alike" in msg
    assert "completion #" not in msg and "(the first was '<answer>4</answer>')" in msg


def test_check_rewards_refuses_an_infinite_score_but_takes_nan_as_not_scored():
    """NaN is TRL's "not scored", as None; inf made the group's advantages and the loss NaN (new-user trial:
    `check` passed it)."""
    texts = ["<answer>4</answer>", "x", "<answer>10</answer>"]
    with pytest.raises(SettingsError, match="returned an infinite score"):
        reward_calls.check_rewards({"mine": lambda completions, **kw: [float("inf")] * len(completions)}, ROWS, texts)
    scores = reward_calls.check_rewards({"mine": lambda completions, **kw: [math.nan] * len(completions)}, ROWS, texts)
    assert all(math.isnan(v) for v in scores["mine"])


def test_arithmetic_on_a_text_column_is_told_that_the_column_is_text():
    """A CSV's columns arrive as text: a reward that divides by `answer` raised a bare TypeError (new-user trial)."""
    texts = ["<answer>4</answer>", "x", "<answer>10</answer>"]
    with pytest.raises(SettingsError) as e:
        reward_calls.check_rewards({"ratio": lambda completions, answer, **kw: [len(c) / a for c, a in zip(completions, answer, strict=True)]},
                                   ROWS, texts)
    msg = str(e.value)
    assert "raised TypeError: unsupported operand type(s) for /: 'int' and 'str'" in msg
    assert "The dataset column answer reaches the reward as text" in msg and "answer='4'" in msg and "float(answer)" in msg
    rows = [{**row, "question": f"What is {i}?", "difficulty": str(i + 1)} for i, row in enumerate(ROWS)]
    for reward, words in [(lambda completions, difficulty, **kw: [2.0 * d / 3 for d in difficulty], "can't multiply sequence"),
                          (lambda completions, difficulty, **kw: [d + 0.0 for d in difficulty], "concatenate str")]:
        with pytest.raises(SettingsError) as e:  # the README's weighted reward on a CSV (second trial)
            reward_calls.check_rewards({"weighted": reward}, rows, texts)
        assert words in str(e.value) and "columns answer, difficulty reach the reward as text" in str(e.value)
        assert "question" not in str(e.value).split("reach the reward")[0]  # a column of words is no number
    with pytest.raises(SettingsError) as other:  # a TypeError about something else: no column hint
        reward_calls.check_rewards({"bad": lambda completions, **kw: [len(None)] * len(completions)}, ROWS, texts)
    assert "reach the reward as text" not in str(other.value)


def test_every_failing_reward_is_named_in_one_message():
    texts = ["<answer>4</answer>", "x", "<answer>10</answer>"]
    with pytest.raises(SettingsError) as e:
        reward_calls.check_rewards({"first": lambda completions, **kw: [1 / 0] * len(completions), "fine": lambda completions, **kw:
                                    [1.0] * len(completions), "second": lambda completions, **kw: ["no"] * len(completions)},
                                   ROWS, texts)
    lines = str(e.value).split("\n")
    assert len(lines) == 2 and lines[0].startswith("reward 'first' raised ZeroDivisionError")
    assert lines[1].startswith("reward 'second' returned a non-number 'no'")


def test_check_rewards_scores_healthy_rewards_like_trl():
    texts = ["<reasoning>a</reasoning><answer>4</answer>", "<answer>8</answer>", "x"]
    scores = reward_calls.check_rewards(["format", "correctness", "partial_format"], ROWS, texts)
    assert scores == {"format": [1.0, 0.0, 0.0], "correctness": [1.0, 0.0, 0.0], "partial_format": [1.0, 0.5, 0.0]}


def test_check_rewards_accepts_what_trl_accepts():
    """Async rewards, None for a skipped completion, callable objects, extra columns as keyword
    arguments, parameterised rewards: as TRL's `_calculate_rewards` takes them."""
    from grpo_job import rewards as R

    rows = [{**r, "difficulty": d} for r, d in zip(ROWS, [1, 2, 3], strict=True)]
    texts = ["<answer>4</answer>", "no tag", "<answer>10</answer>"]
    built = R.build_all({
        "tests.reward_fixtures:async_tag_reward": 1.0, "tests.reward_fixtures:odd_rows_skipped": 1.0,
        "tests.reward_fixtures:difficulty_bonus": 1.0})
    built["soft_overlong"] = R.build("soft_overlong", {"max_completion_len": 4, "soft_punish_cache": 2})
    scores = reward_calls.check_rewards(built, rows, texts, completion_ids=[[1] * 2, [1] * 3, [1] * 9])
    assert scores["tests.reward_fixtures:async_tag_reward"] == [1.0, 0.0, 1.0]
    skipped = scores["tests.reward_fixtures:odd_rows_skipped"]
    assert skipped[0] == 1.0 and math.isnan(skipped[1]) and skipped[2] == 1.0
    assert scores["tests.reward_fixtures:difficulty_bonus"] == pytest.approx([0.1, 0.2, 0.3])
    assert scores["soft_overlong"] == [0.0, -0.5, -1.0]
    report = health.reward_report(scores)
    assert report["tests.reward_fixtures:odd_rows_skipped"] == {"scored": pytest.approx(2 / 3), "mean": 1.0,
                                                                 "std": 0.0, "varies": False}
    assert report["soft_overlong"]["varies"] and report["soft_overlong"]["scored"] == 1.0


def test_preflight_advice_names_the_setting_to_change():
    s = load_settings(SMOKE, ['--rewards={"partial_format": 0.5, "correctness": 2.0}'])
    flat = {"partial_format": {"scored": 1.0, "mean": 0.0, "std": 0.0, "varies": False},
            "correctness": {"scored": 1.0, "mean": 0.0, "std": 0.0, "varies": False}}
    cut = health.advice(s, flat, clipped=0.75)
    assert f"75% of the completions were cut off at train.max_completion_length={s.train.max_completion_length}" in cut
    assert "GRPO_TRAIN__MAX_COMPLETION_LENGTH" in cut
    assert "add a partial-credit reward" not in cut  # it is configured already
    s = load_settings(None, ['--rewards={"correctness": 2.0}', "--data.path=builtin:arithmetic"])  # no partial_format
    short = health.advice(s, {"correctness": flat["correctness"]}, clipped=0.0)
    assert "MAX_COMPLETION_LENGTH" not in short and "add a partial-credit reward (partial_format)" in short


def test_advice_points_at_the_rows_own_system_messages_when_they_replace_the_setting():
    """Rows in TRL's conversational format with their own system message: the advice said to ask for the format
    in GRPO_DATA__SYSTEM_PROMPT, which those rows replace (trial T)."""
    from grpo_job import chat

    s = load_settings(SMOKE)
    own = [{"prompt": [{"role": "system", "content": "Answer with one letter."}, {"role": "user", "content": "Q?"}]}]
    sent = [{"prompt": [{"role": "system", "content": s.data.system_prompt}, {"role": "user", "content": "Q?"}]},
            {"prompt": [{"role": "user", "content": "Q?"}]}]
    assert chat.instruction_place(s, sent) == "GRPO_DATA__SYSTEM_PROMPT"
    place = chat.instruction_place(s, own + sent)
    assert place == "the rows' own system messages (they replace GRPO_DATA__SYSTEM_PROMPT)"
    flat = {"correctness": {"scored": 1.0, "mean": 0.0, "std": 0.0, "varies": False}}
    said = health.advice(s, flat, clipped=0.75, instruction=place)
    assert "ask for a shorter answer in the rows' own system messages" in said
    assert "check that the rows' own system messages (they replace GRPO_DATA__SYSTEM_PROMPT) ask for the format" in said
    assert "check that GRPO_DATA__SYSTEM_PROMPT asks for the format" in health.advice(s, flat, clipped=0.0)


def test_advice_for_a_task_in_another_format_never_asks_for_partial_format():
    """partial_format needs prompts asking for <answer>, which `check` then demands (trial: a code task was told to
    add it, and `check` refused the result); a user reward giving one score to all is named."""
    s = load_settings(None, ['--rewards={"code": 1.0, "tests.reward_fixtures:length_reward": 0.5}',
                             "--data.path=builtin:coding", "--data.task=plain"])
    said = health.advice(s, {"code": {"scored": 1.0, "mean": 0.0, "std": 0.0, "varies": False},
                             "tests.reward_fixtures:length_reward": {"scored": 1.0, "mean": 0.5, "std": 0.0,
                                                                    "varies": False}}, clipped=0.0)
    assert "partial_format" not in said and "a reward of your own that gives partial credit" in said
    assert "tests.reward_fixtures:length_reward (0.5) gave every completion the same score" in said
    stop = health.Guards(s, {"code": "code_reward"}).partial
    assert stop is not None and "partial_format" not in stop
    assert health.Guards(load_settings(SMOKE), {}).partial is None  # partial_format is configured there


@pytest.mark.parametrize("overrides, says", [
    (["--train.max_steps=100", "--health.zero_std_steps=20"], "will stop the run (exit 3) after 20 such steps"),
    (["--train.max_steps=3", "--health.zero_std_steps=20"], "its 3 steps end before the zero-variance guard"),
    (["--train.max_steps=100", "--health.zero_std_steps=0"], "the zero-variance guard is off"),
])
def test_preflight_says_what_the_zero_variance_guard_will_do(overrides, says):
    # a 3-step run never reaches a 20-step guard: the preflight must not promise a stop
    assert says in health.guard_outlook(load_settings(SMOKE, overrides))


def test_guard_keys_on_the_name_trl_logs():
    s = load_settings(SMOKE, ['--rewards={"tests.reward_fixtures:difficulty_bonus": 1.0, "soft_overlong": '
                              '{"weight": 1.0, "max_completion_len": 48, "soft_punish_cache": 8}, "correctness": 1.0}',
                              "--health.zero_reward_steps=2", "--health.zero_std_steps=0"])
    g = health.Guards(s, R.log_names(R.build_all(s.rewards, s.data.answer_type)))
    assert {"DifficultyBonus", "soft_overlong_punishment_reward", "correctness_reward"} <= set(g.watched)
    logs = {"rewards/DifficultyBonus/mean": 0.0, "rewards/soft_overlong_punishment_reward/mean": -0.1,
            "rewards/correctness_reward/mean": 0.5}
    assert g.observe(1, logs) is None
    assert "reward 'tests.reward_fixtures:difficulty_bonus' was exactly 0 for 2" in g.observe(2, logs)


def _guards(*overrides):
    s = load_settings(SMOKE, ["--health.zero_std_steps=3", "--health.zero_reward_steps=2", *overrides])
    return health.Guards(s, R.log_names(R.build_all(s.rewards, s.data.answer_type)))


def test_guard_zero_variance_counts_consecutive_steps_only():
    g = _guards("--health.zero_reward_steps=0")
    assert g.observe(1, {"frac_reward_zero_std": 1.0}) is None
    assert g.observe(2, {"frac_reward_zero_std": 1.0}) is None
    assert g.observe(3, {"frac_reward_zero_std": 0.5}) is None  # one group had signal: the count restarts
    assert g.observe(4, {"frac_reward_zero_std": 1.0}) is None
    assert g.observe(5, {"frac_reward_zero_std": 1.0}) is None
    msg = g.observe(6, {"frac_reward_zero_std": 1.0})
    assert msg and "zero reward variance for 3 steps" in msg and "GRPO_HEALTH__ZERO_STD_STEPS" in msg


@pytest.mark.parametrize(("limit", "stops_at"), [(9, 9), (10, 13), (4, 5)])
def test_guards_count_optimizer_steps_when_rewards_come_once_per_generation(limit, stops_at):
    """With steps_per_generation 4, rewards are logged at steps 1, 5, 9...: each stands for the steps since
    the last, so a limit in steps means the same whatever the generation batch."""
    g = _guards(f"--health.zero_std_steps={limit}", "--health.zero_reward_steps=0")
    for step in range(1, 30):
        logs = {"frac_reward_zero_std": 1.0} if step % 4 == 1 else {"loss": 0.0}
        if (msg := g.observe(step, logs)) is not None:
            assert step == stops_at and f"for {1 + (step - 1)} steps" in msg
            return
    raise AssertionError("never stopped")


def test_guard_zero_reward_names_the_reward_and_honours_exemptions():
    g = _guards()
    logs = {"rewards/format_reward/mean": 0.0, "rewards/partial_format_reward/mean": 0.25,
            "rewards/correctness_reward/mean": 0.0}
    assert g.observe(1, logs) is None
    msg = g.observe(2, logs)
    assert msg and "reward 'format' was exactly 0 for 2 steps" in msg
    g = _guards("--health.zero_reward_exempt=[format, correctness]")
    assert g.observe(1, logs) is None and g.observe(2, logs) is None and g.observe(3, logs) is None


def test_guard_nan_stops_at_once_and_can_be_disabled():
    assert "loss is nan at step 7" in _guards().observe(7, {"loss": float("nan"), "grad_norm": 0.1})
    assert "grad_norm is inf" in _guards().observe(7, {"loss": 0.1, "grad_norm": float("inf")})
    assert _guards("--health.stop_on_nan=false").observe(7, {"loss": float("nan")}) is None


def test_exempt_reward_must_be_a_configured_reward():
    with pytest.raises(SettingsError, match="zero_reward_exempt names \\['nope'\\]"):
        load_settings(SMOKE, ["--health.zero_reward_exempt=[nope]"])


def test_cuda_oom_becomes_a_message_naming_the_settings(tmp_path, monkeypatch, capsys):
    import torch

    def oom(settings, only=None, restart=None, ctx=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)")

    monkeypatch.setattr(pipeline, "run", oom)
    rc = cli.main(["run", "--config", str(SMOKE), f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'w'}",
                   "--log_format=text"])
    err = capsys.readouterr().err
    assert rc == 2
    for name in ("GPU_MEMORY_UTILIZATION", "NUM_GENERATIONS", "MAX_COMPLETION_LENGTH", "PER_DEVICE_TRAIN_BATCH_SIZE"):
        assert name in err
    assert "Traceback" not in err
    assert health.oom_message(ValueError("No available memory for the cache blocks. Try increasing "
                                         "`gpu_memory_utilization`")).startswith("vLLM has no GPU memory left")
    assert health.oom_message(ValueError("some other error")) is None


# ---------------------------------------------------------------- slow: the real base model, real training
@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    # one dequantized model cache for every test module of this session
    return tmp_path_factory.getbasetemp() / "grpo-work"


# ---------------------------------------------------------------- fast: the data check's dry call of every reward
def _prepared_rows(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"question": f"What is {i} + 2?", "answer": f"#### {i + 2}", "solution": str(i + 2)})
                         + "\n" for i in range(5)))
    return data.prepare(DataSettings(path=str(f), eval_fraction=0), tmp_path)[0]


@pytest.mark.parametrize("name, kwargs, words", [
    ("repetition_penalty", {"ngram_size": 0}, ["raised ZeroDivisionError"]),  # TRL's own rewards
    ("cosine_scaled", {"max_len": 0}, ["raised ZeroDivisionError"]),
    ("tests.reward_fixtures:no_kwargs", {}, ["raised TypeError", "unexpected keyword argument 'prompts'", "**kwargs"]),
    ("tests.test_health:drops_empty", {}, ["returned 3 scores for 6 completions", "completion #1", "''"]),
])
def test_dry_call_names_a_reward_that_breaks_when_trl_calls_it(tmp_path, name, kwargs, words):
    rows = _prepared_rows(tmp_path)
    with pytest.raises(SettingsError) as e:
        reward_calls.dry_call({name: R.build(name, kwargs)}, rows)
    msg = str(e.value)
    assert f"reward {name!r}" in msg and f"rewards.{name}" in msg and "dry call" in msg, msg
    assert all(w in msg for w in words), msg


def test_dry_call_passes_trl_arguments_and_synthetic_completions(tmp_path, chat_models, monkeypatch):
    """Healthy rewards score the synthetic completions as expected (the reference answer in the format earns
    correctness, the empty one nothing), get every column grouped as TRL groups it, once per batch, and
    token ids from the model's tokenizer."""
    from grpo_job import chat

    monkeypatch.setenv("TEST_REWARD_LOG", str(tmp_path / "calls.jsonl"))  # by_difficulty logs each call's column
    rows = [{**r, "difficulty": i + 1} for i, r in enumerate(_prepared_rows(tmp_path))]
    built = R.build_all({"format": 1.0, "correctness": 1.0, "tests.reward_fixtures:by_difficulty": 1.0,
                         "tests.reward_fixtures:async_tag_reward": 1.0})
    built["soft_overlong"] = R.build("soft_overlong", {"max_completion_len": 10, "soft_punish_cache": 5})
    scores = reward_calls.dry_call(built, rows, chat.from_folder(chat_models["smollm2"]))
    assert (tmp_path / "calls.jsonl").read_text().splitlines() == ["[1, 1, 2, 2, 3, 3]"]
    assert scores["format"] == scores["correctness"] == [1.0, 0.0] * reward_calls.DRY_ROWS
    assert scores["tests.reward_fixtures:async_tag_reward"] == [1.0, 0.0] * reward_calls.DRY_ROWS
    assert scores["tests.reward_fixtures:by_difficulty"][1] == 0.0 < scores["tests.reward_fixtures:by_difficulty"][0]
    # the formatted answer is ~15 tokens + eos (past 10: punished), the empty one just eos (not)
    assert scores["soft_overlong"][0] < 0 and scores["soft_overlong"][1] == 0.0


def _preflight(tmp_path, work_dir, reward):
    s = load_settings(SMOKE, [f"--store.uri={tmp_path / 'runs'}", f"--work_dir={work_dir}", "--run_id=pf",
                              f'--rewards={{"partial_format": 0.5, "{reward}": 1.0}}', "--health.preflight_samples=4"])
    stages = [st for st in all_stages() if st.name in ("prepare_data", "reward_preflight")]
    with pytest.raises(SettingsError) as e:
        pipeline.run(s, stages)
    rows = data.from_jsonl((tmp_path / "runs" / "pf" / "data" / "train.jsonl").read_text())[:4]
    return str(e.value), rows


@pytest.mark.slow
def test_preflight_on_the_real_model_catches_a_raising_reward(tmp_path, work_dir):
    msg, rows = _preflight(tmp_path, work_dir, "tests.test_health:raises_on_odd_answer")
    first_odd = next(i for i, r in enumerate(rows) if int(r["answer"]) % 2)
    assert "reward 'tests.test_health:raises_on_odd_answer' raised ValueError" in msg
    # the sampled completion of that prompt is shown, with its reference answer
    # the batch's error is the completion's own, so it is said once (it was repeated; new-user trial)
    assert f"raised ValueError: cannot score answer {rows[first_odd]['answer']}, on completion #{first_odd}: " in msg
    assert msg.count("raised ValueError") == 1
    assert f"(reference answer {rows[first_odd]['answer']!r})" in msg
    shown = msg.split(f"on completion #{first_odd}: ")[1]
    assert len(shown.split(" (reference answer")[0]) > 5
    assert not (tmp_path / "runs" / "pf" / "stages" / "reward_preflight.json").exists()


@pytest.mark.slow
def test_preflight_on_the_real_model_catches_a_wrong_length(tmp_path, work_dir):
    msg, _ = _preflight(tmp_path, work_dir, "tests.test_health:drops_untagged")
    assert "reward 'tests.test_health:drops_untagged' returned" in msg and "scores for 4 completions" in msg
    assert "on completion #" in msg


@pytest.mark.slow
def test_zero_variance_guard_stops_a_cpu_run_with_code_3(tmp_path, work_dir):
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "run", "--config", str(SMOKE),
           f"--store.uri={tmp_path / 'runs'}", f"--work_dir={work_dir}", "--run_id=guard", "--log_format=json",
           '--rewards={"tests.test_health:constant_reward": 1.0}', "--health.zero_std_steps=2",
           "--health.preflight_samples=0", "--evaluation.enabled=false", "--train.max_steps=5",
           "--train.save_steps=100", "--export.merge=false"]
    env = job_env(tmp_path)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1200)
    assert r.returncode == 3, r.stderr[-4000:]
    assert "training stopped by a health guard at step 2" in r.stderr
    assert "zero reward variance for 2 steps" in r.stderr
    run = tmp_path / "runs" / "guard"
    # it saved (and uploaded) a checkpoint before stopping, although save_steps is 100
    assert (run / "checkpoints" / "checkpoint-2" / "manifest.json").is_file()
    assert not (run / "stages" / "train.json").exists()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2
    # the report says why it stopped and shows the curves that led there (no report marker: a later run writes it)
    md = (run / "report" / "report.md").read_text()
    assert "**The run stopped in stage train with exit 3: training stopped by a health guard at step 2" in md
    assert "constant_reward" in md and (run / "report" / "rewards.png").is_file()
    assert not (run / "stages" / "report.json").exists()


@pytest.mark.parametrize("name", ["think_format_reward", "accuracy_reward"])
def test_trls_message_rewards_on_plain_text_prompts_say_why(name):
    """TRL's own rewards index completion[0]['content']: on plain-text prompts the message was only
    "string indices must be integers" (new-user trial)."""
    rows = [{"prompt": "q1", "answer": "4", "solution": "4"}]
    with pytest.raises(SettingsError, match=f"{name} is TRL's and reads each completion as chat messages.*PROMPT_FORMAT=chat"):
        reward_calls.check_rewards([name], rows, ["<think>a</think>4"])
    chat_rows = [{**rows[0], "prompt": [{"role": "user", "content": "q1"}]}]
    assert len(reward_calls.check_rewards([name], chat_rows, ["<think>a</think>4"])[name]) == 1


def test_bare_reference_answers_that_correctness_cannot_read_are_said():
    """A sentiment task's model answered `neutral` for `neutral`: correctness reads <answer> blocks only and scored
    it 0 before and after training, with nothing said (trial). The preflight says so when it samples such answers."""
    rows = [{"prompt": "Review: fine.", "answer": "neutral"}, {"prompt": "Review: great!", "answer": "positive"},
            {"prompt": "Review: bad.", "answer": "negative"}]
    texts = ["Neutral.", "<answer>positive</answer>", "I think this review is rather negative overall."]
    note = health.bare_answer_note(load_settings(SMOKE, ["--data.answer_type=auto"]), rows, texts)
    assert note.startswith("1 of 3 sampled completions are the reference answer without an <answer> block (e.g. 'Neutral.')")
    assert "GRPO_DATA__SYSTEM_PROMPT" in note
    assert health.bare_answer_note(load_settings(SMOKE), rows, ["<answer>neutral</answer>"] + texts[1:]) is None
    own = load_settings(SMOKE, ['--rewards={"tests.reward_fixtures:length_reward": 1.0}'])
    assert health.bare_answer_note(own, rows, texts) is None  # no correctness reward: nothing to say


def test_masking_most_of_the_batch_away_is_said():
    """With mask_truncated_completions the preflight logged clipped_rate 0.625 and said nothing (recipe trial)."""
    masked = load_settings(SMOKE, ['--train.extra={"mask_truncated_completions": "true"}'])
    assert "62% of the sampled completions were cut off" in health.masked_share_note(masked, 0.625)
    assert health.masked_share_note(masked, 0.25) is None
    assert health.masked_share_note(load_settings(SMOKE), 0.9) is None
    # YAML 1.1's other spellings of true reach TRL as True (environment.grpo_config_extra): said too
    on = load_settings(SMOKE, ['--train.extra={"mask_truncated_completions": "on"}'])
    assert "62% of the sampled completions were cut off" in health.masked_share_note(on, 0.625)
