"""Bring your own task: TRL's standard and conversational prompts, column mapping, the `math` task, every
column reaching the rewards, and the checks that stop bad input with exit 2 before any model is loaded
(columns, malformed lines, chat template, prompt lengths). Rows are hand-made for each case."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_job import chat, data, pipeline
from grpo_job.errors import EXIT_INVALID, SettingsError
from grpo_job.rewards import calls as reward_calls
from grpo_job.settings import DataSettings, load_settings
from grpo_job.stages import stages as all_stages
from grpo_job.store import LocalStore
from tests.job_env import job_env

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "examples" / "smoke.yaml"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def check(tmp_path, *overrides):
    """`entrypoint.py check` on the smoke settings, offline, as a user runs it."""
    env = job_env(tmp_path)
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "check", "--config", str(SMOKE), "--log_format=text",
           f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'work'}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


PROBLEMS = [{"problem": f"What is {a} + {b}?", "solution": f"{a} + {b} = {a + b}, so the answer is $\\boxed{{{a + b}}}$."}
            for a, b in [(1, 2), (3, 4), (10, 5), (7, 7), (2, 9)]]


# ---------------------------------------------------------------- tasks and formats
@pytest.mark.parametrize("solution, want", [
    ("so $\\boxed{12}$.", "12"),
    ("first \\boxed{1}, then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # the last one, nested braces kept
    ("\\fbox{x^2}", "x^2"),
    ("no box at all", ""),
    ("\\boxed{unclosed", ""),
])
def test_boxed_answer_is_the_last_box(solution, want):
    assert data.boxed_answer(solution) == want


def test_problem_solution_rows_need_the_math_task_and_train_with_it(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", PROBLEMS)
    with pytest.raises(SettingsError) as e:
        data.prepare(DataSettings(path=str(f)), tmp_path)  # default task gsm8k: question/answer
    assert "GRPO_DATA__TASK=math" in str(e.value) and "['problem', 'solution']" in str(e.value)

    train, heldout, summary = data.prepare(DataSettings(path=str(f), task="math", eval_fraction=0.2), tmp_path)
    rows = train + heldout
    assert sorted(r["answer"] for r in rows) == sorted(["3", "7", "15", "14", "11"])
    r = rows[0]
    assert r["prompt"][0]["role"] == "system" and r["prompt"][1] == {"role": "user", "content": r["problem"]}
    assert r["solution"].endswith(f"\\boxed{{{r['answer']}}}$.")  # the source columns are kept
    assert (summary["prompt_column"], summary["answer_column"]) == ("problem", "solution")


def test_conversational_prompts_with_a_mapped_answer_column(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"{i} times 2?"}], "solution": str(2 * i), "id": i}
            for i in range(6)]
    rows[0]["prompt"] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "0 times 2?"}]
    f = write_jsonl(tmp_path / "d.jsonl", rows)
    # TRL's own format needs no mapping (issue 23 item 11): the reference is read from `solution` when the task's
    # `answer` is absent, and the summary says so
    train, heldout, summary = data.prepare(DataSettings(path=str(f), task="plain"), tmp_path)
    assert summary["answer_column"] == "solution" and "TRL's standard column" in summary["columns_note"]
    assert sorted(r["answer"] for r in train + heldout) == sorted(str(2 * i) for i in range(6))
    s = DataSettings(path=str(f), task="plain", answer_column="solution", eval_fraction=0.2)
    train, heldout, _ = data.prepare(s, tmp_path)
    by_id = {r["id"]: r for r in train + heldout}
    assert by_id[3]["prompt"] == [{"role": "system", "content": s.system_prompt}, {"role": "user", "content": "3 times 2?"}]
    assert by_id[0]["prompt"][0] == {"role": "system", "content": "Be brief."} and len(by_id[0]["prompt"]) == 2
    assert by_id[3]["answer"] == "6" and by_id[3]["solution"] == "6"


def test_standard_text_prompts_template_few_shot_and_no_system_prompt(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"2^{i}", "answer": str(2**i)} for i in range(4)])
    s = DataSettings(path=str(f), task="plain", system_prompt="", prompt_template="Compute {prompt}. Answer in \\boxed{}.",
                     few_shot=[{"prompt": "Compute 1+1. Answer in \\boxed{}.", "completion": "\\boxed{2}"}])
    assert s.system_prompt is None  # empty means none: no empty system message is sent
    train, heldout, _ = data.prepare(s, tmp_path)
    r = next(r for r in train + heldout if r["answer"] == "8")
    assert r["prompt"] == [{"role": "user", "content": "Compute 1+1. Answer in \\boxed{}."},
                           {"role": "assistant", "content": "\\boxed{2}"},
                           {"role": "user", "content": "Compute 2^3. Answer in \\boxed{}."}]
    with pytest.raises(ValueError, match=r"\{prompt\}"):
        DataSettings(path=str(f), prompt_template="no slot")


def test_prompt_template_fills_other_columns_of_the_row(tmp_path, caplog):
    """A multiple-choice task keeps its options in a column of their own: `{choices}` in the template is filled
    from each row (a list as JSON, a nested field by its dotted name), while LaTeX braces, a prompt that holds
    `{choices}` itself and a slot no column has stay as written; the last is warned of (trial: `{choices}` was
    sent to the model as written, without a word)."""
    rows = [{"question": "Capital of Italy?", "choices": ["Paris", "Rome"], "label": "B", "meta": {"unit": "city"}},
            {"question": "Literally {choices}?", "choices": ["yes", "no"], "label": "A", "meta": {"unit": "word"}}]
    f = write_jsonl(tmp_path / "d.jsonl", rows)
    s = DataSettings(path=str(f), task="plain", prompt_column="question", answer_column="label", eval_fraction=0,
                     system_prompt="", prompt_template="{prompt}\nOptions: {choices} ({meta.unit}; {choises}) "
                                                       "in \\frac{a}{b}")
    with caplog.at_level("WARNING"):
        train, _, _ = data.prepare(s, tmp_path)
    texts = {r["label"]: r["prompt"][-1]["content"] for r in train}
    assert texts["B"] == 'Capital of Italy?\nOptions: ["Paris", "Rome"] (city; {choises}) in \\frac{a}{b}'
    assert texts["A"] == 'Literally {choices}?\nOptions: ["yes", "no"] (word; {choises}) in \\frac{a}{b}'
    warned = [r.getMessage() for r in caplog.records if "prompt_template" in r.getMessage()]
    assert len(warned) == 1 and "{choises}" in warned[0] and "did you mean 'choices'" in warned[0]
    assert "{a}" not in warned[0] and "{b}" not in warned[0]  # LaTeX's braces are no slots

    rows.append({"question": "No options?", "label": "A", "meta": {"unit": "x"}})
    with pytest.raises(SettingsError, match=r"no value in column\(s\) \['choices'\] \(data.prompt_template's "
                                            r"\{choices\}\)"):
        data.prepare(s.model_copy(update={"path": str(write_jsonl(tmp_path / "e.jsonl", rows))}), tmp_path)
    # a nested field that no row has is the template's typo, not the rows' fault (trial: `{meta.subject}`)
    caplog.clear()
    with caplog.at_level("WARNING"):
        train, _, _ = data.prepare(s.model_copy(update={"prompt_template": "{prompt} ({meta.units})"}), tmp_path)
    assert {r["prompt"][-1]["content"] for r in train} == {"Capital of Italy? ({meta.units})",
                                                             "Literally {choices}? ({meta.units})"}
    assert any("{meta.units}, which no column of" in r.getMessage() for r in caplog.records)


def test_the_default_system_prompt_given_to_chat_prompts_is_said(tmp_path, caplog):
    """Conversational prompts without a system message get data.system_prompt; left at its default (the
    <reasoning>/<answer> instruction), that is said, with how to send them as they are (trial)."""
    rows = [{"prompt": [{"role": "user", "content": f"Great film {i}! One word?"}], "label": "positive"} for i in range(3)]
    rows.append({"prompt": [{"role": "system", "content": "Answer with one word."},
                            {"role": "user", "content": "Awful."}], "label": "negative"})
    f = write_jsonl(tmp_path / "d.jsonl", rows)

    def warned(**settings):
        caplog.clear()
        with caplog.at_level("WARNING"):
            train, _, _ = data.prepare(DataSettings(path=str(f), task="plain", answer_column="label", eval_fraction=0,
                                                    **settings), tmp_path)
        said = [r.getMessage() for r in caplog.records if "conversational prompts" in r.getMessage()]
        return train, said

    train, said = warned()
    assert len(said) == 1 and said[0].startswith("data: 3 of 4 conversational prompts") and "GRPO_DATA__SYSTEM_PROMPT" in said[0]
    assert sum(r["prompt"][0]["content"] == "Answer with one word." for r in train) == 1  # its own is kept
    train, said = warned(system_prompt="Answer with one word.")
    assert said == [] and all(r["prompt"][0]["role"] == "system" for r in train)
    train, said = warned(system_prompt="")
    assert said == [] and sum(r["prompt"][0]["role"] == "system" for r in train) == 1  # sent as they are


def test_every_column_reaches_the_rewards_and_a_missing_one_is_named(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"#### {i}", "difficulty": i % 3 + 1, "tags": ["a", str(i)]}
            for i in range(8)]
    train, _, summary = data.prepare(DataSettings(path=str(write_jsonl(tmp_path / "d.jsonl", rows))), tmp_path)
    assert {"difficulty", "tags", "prompt", "answer", "question"} <= set(summary["columns"])
    reward_calls.check_reward_columns(["correctness", "tests.reward_fixtures:by_difficulty"], summary["columns"])
    # the preflight calls the rewards as TRL does: the column arrives, one value per completion
    scores = reward_calls.check_rewards(["tests.reward_fixtures:by_difficulty"], train[:3], ["x" * 50] * 3)
    assert scores["tests.reward_fixtures:by_difficulty"] == [r["difficulty"] * 50 / 500 for r in train[:3]]
    with pytest.raises(SettingsError) as e:
        reward_calls.check_reward_columns(["tests.reward_fixtures:by_difficulty"], ["question", "answer", "prompt"])
    assert "['difficulty']" in str(e.value) and "tests.reward_fixtures:by_difficulty" in str(e.value)
    # every reward short of a column in one message; TRL's `solution` is told where the reference is (recipe trial);
    # TRL's own math rewards read the reference from `answer` (trial: a `\boxed{}` task had to add a column)
    with pytest.raises(SettingsError) as e:
        reward_calls.check_reward_columns(["tests.reward_fixtures:by_difficulty", "accuracy_reward", "think_format_reward",
                                           "tests.reward_fixtures:by_solution"], ["question", "answer", "prompt"])
    assert all(f"reward {name!r} needs" in str(e.value) for name in ("tests.reward_fixtures:by_difficulty",
                                                                       "tests.reward_fixtures:by_solution"))
    assert "accuracy_reward" not in str(e.value) and "think_format_reward" not in str(e.value)
    assert "name the reward's parameter `answer`, or give the data a `solution` column" in str(e.value)


@pytest.mark.parametrize("row, words", [
    ({"question": "q", "answer": "1", "trainer_state": 1}, ["trainer_state", "rename"]),
    ({"question": "q", "answer": "1", "completions": "x"}, ["completions"]),
    ({"question": "q", "answer": "1", "prompt": "other"}, ["'prompt'", "GRPO_DATA__PROMPT_COLUMN=prompt"]),
    ({"problem": "q", "solution": "\\boxed{1}", "answer": "2"}, ["'answer'", "GRPO_DATA__ANSWER_COLUMN=answer"]),
])
def test_columns_colliding_with_trl_or_the_prepared_names_fail_early(tmp_path, row, words):
    f = write_jsonl(tmp_path / "d.jsonl", [row, row])
    task = "math" if "problem" in row else "gsm8k"
    with pytest.raises(SettingsError) as e:
        data.prepare(DataSettings(path=str(f), task=task), tmp_path)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_malformed_jsonl_line_empty_file_and_mixed_types_are_reported(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"question": "a", "answer": "1"}\n\n{"question": "b", "answer": "2"}\n{"question": "c", answer: 3}\n')
    with pytest.raises(SettingsError, match=r"line 4: not valid JSON"):
        data.prepare(DataSettings(path=str(f)), tmp_path)
    f.write_text("\n")
    with pytest.raises(SettingsError, match="has no rows"):
        data.prepare(DataSettings(path=str(f)), tmp_path)
    write_jsonl(f, [{"question": "a", "answer": "1", "level": 2}, {"question": "b", "answer": "2", "level": "hard"},
                    {"question": "c", "answer": "3", "level": 1}])
    with pytest.raises(SettingsError, match="column 'level'.*mixes value types"):
        data.prepare(DataSettings(path=str(f)), tmp_path)
    write_jsonl(f, [{"question": "a", "answer": None}, {"question": "b", "answer": "2"}])
    with pytest.raises(SettingsError, match=r"no value in column\(s\) \['answer'\]"):
        data.prepare(DataSettings(path=str(f), eval_fraction=0.5), tmp_path)


def test_reference_answers_the_checker_cannot_parse_are_counted_and_most_stop_the_run(tmp_path):
    rows = [dict(r) for r in PROBLEMS]
    rows[1]["solution"] = "The sum is seven."  # no \\boxed{}: no reference answer
    f = write_jsonl(tmp_path / "d.jsonl", rows)
    s = DataSettings(path=str(f), task="math", answer_type="math", eval_fraction=0.2)
    train, _, _ = data.prepare(s, tmp_path)
    assert data.check_references(train, s) == {"unparsable_answers": int(any(r["answer"] == "" for r in train))}
    for r in rows[:4]:
        r["solution"] = "I am not sure."
    write_jsonl(f, rows)
    train, _, _ = data.prepare(s, tmp_path)
    with pytest.raises(SettingsError) as e:
        data.check_references(train, s)
    assert "cannot be parsed as answer_type='math'" in str(e.value) and "I am not sure." in str(e.value)
    assert "GRPO_DATA__ANSWER_COLUMN" in str(e.value)
    # words are fine references when compared as text
    words = [{"prompt": f"Capital of country {i}?", "answer": "Paris"} for i in range(4)]
    f2 = write_jsonl(tmp_path / "w.jsonl", words)
    s2 = DataSettings(path=str(f2), task="plain", answer_type="exact")
    assert data.check_references(data.prepare(s2, tmp_path)[0], s2) == {"unparsable_answers": 0}
    with pytest.raises(SettingsError, match="answer_type='math'"):
        s3 = DataSettings(path=str(f2), task="plain", answer_type="math")
        data.check_references(data.prepare(s3, tmp_path)[0], s3)


# ---------------------------------------------------------------- prompts against the chat template
ROWS = [{"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "What is 12 + 7?"}]},
        {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "What is 12 + 7? " * 20}]}]


def test_chat_template_rendered_and_prompts_counted(chat_models):
    ct = chat.PromptRenderer(chat.from_folder(chat_models["smollm2"]), "chat")
    s = DataSettings(path="builtin:arithmetic", system_prompt="S")
    out = data.check_prompts(ROWS, ct, s, max_prompt_length=40)
    assert out["too_long"] == 1 and out["prompt_tokens_max"] > 40
    assert data.check_prompts(ROWS, ct, s, max_prompt_length=out["prompt_tokens_max"])["too_long"] == 0
    with pytest.raises(SettingsError) as e:
        data.check_prompts(ROWS, ct, s, max_prompt_length=10)
    assert "GRPO_TRAIN__MAX_PROMPT_LENGTH" in str(e.value) and "every one of the 2" in str(e.value)


def test_counts_equal_what_the_trainer_measures(chat_models):
    from transformers import AutoTokenizer

    from grpo_job.training import train

    tok = AutoTokenizer.from_pretrained(chat_models["smollm2"])
    ct = chat.PromptRenderer(chat.from_folder(chat_models["smollm2"]), "chat")
    assert tok.apply_chat_template(ROWS[0]["prompt"], add_generation_prompt=True, tokenize=False) == ct.text(ROWS[0]["prompt"])
    n = [ct.count(r["prompt"]) for r in ROWS]
    assert n == [len(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, return_dict=False)) for r in ROWS]
    assert train.drop_long_prompts(ROWS, ct, n[0]) == ROWS[:1] and train.drop_long_prompts(ROWS, ct, n[1]) == ROWS


def test_a_template_that_rejects_system_names_the_system_prompt_setting(chat_models):
    ct = chat.PromptRenderer(chat.from_folder(chat_models["gemma_style"]), "chat")
    with pytest.raises(SettingsError) as e:
        data.check_prompts(ROWS, ct, DataSettings(path="builtin:arithmetic", system_prompt="S"), 256)
    assert "System role not supported" in str(e.value) and "GRPO_DATA__SYSTEM_PROMPT" in str(e.value)
    no_system = [{"prompt": r["prompt"][1:]} for r in ROWS]
    assert data.check_prompts(no_system, ct, DataSettings(path="builtin:arithmetic", system_prompt=None), 256)[
        "too_long"] == 0
    with pytest.raises(SettingsError, match="has no chat template"):
        data.check_prompts(no_system, chat.PromptRenderer(chat.from_folder(chat_models["no_template"]), "chat"),
                           DataSettings(), 256)


@pytest.mark.parametrize("case, overrides, words", [
    ("gemma_style", [], ["GRPO_DATA__SYSTEM_PROMPT", "System role not supported"]),
    # no chat template: plain prompts unless chat is asked for (tests/test_prompts.py checks the plain path)
    ("no_template", ["--data.prompt_format=chat"], ["has no chat template", "GRPO_DATA__PROMPT_FORMAT=plain"]),
    ("smollm2", ["--train.max_prompt_length=10"], ["GRPO_TRAIN__MAX_PROMPT_LENGTH", "every one of the 64"]),
    # a reward that builds but breaks when TRL calls it: the data check's dry call
    ("smollm2", ['--rewards={"tests.reward_fixtures:no_kwargs": 1}'],
     ["reward 'tests.reward_fixtures:no_kwargs' raised TypeError", "**kwargs", "rewards.tests.reward_fixtures:no_kwargs"]),
])
def test_check_exits_2_before_any_model_is_loaded(tmp_path, chat_models, case, overrides, words):
    r = check(tmp_path, f"--model.name_or_path={chat_models[case]}", "--model.gguf_file=null", *overrides)
    assert r.returncode == EXIT_INVALID, r.stdout + r.stderr
    assert all(w in r.stderr for w in words), r.stderr
    assert "Traceback" not in r.stderr


def test_check_passes_without_a_system_prompt_and_shows_mapping_and_counts(tmp_path, chat_models):
    f = write_jsonl(tmp_path / "d.jsonl", [{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}",
                                            "difficulty": i % 3} for i in range(20)])
    ev = write_jsonl(tmp_path / "ev.jsonl", [{"question": f"What is {i} + 1?", "answer": f"#### {i + 1}",
                                             "difficulty": 1} for i in range(7)])
    r = check(tmp_path, f"--model.name_or_path={chat_models['gemma_style']}", "--model.gguf_file=null",
              "--data.system_prompt=", f"--data.path={f}", "--train.max_prompt_length=34",
              '--rewards={"tests.reward_fixtures:by_difficulty": 1.0}', f"--evaluation.data_path={ev}")
    assert r.returncode == 0, r.stderr
    assert f"evaluation: 7 rows from evaluation.data_path {ev}" in r.stdout
    assert "prompt <- 'question', answer <- 'answer'" in r.stdout and "'difficulty'" in r.stdout
    assert "19 train rows, 1 held-out rows; reference answers the checker cannot parse (answer_type auto): 0; " \
        "chat template: ok" in r.stdout
    # "What is 3 + 3?" is 33 tokens in this template, "What is 13 + 13?" 35 (digits are single tokens)
    dropped = re.search(r"prompts longer than max_prompt_length=34: (\d+) \(longest 35 tokens\)", r.stdout)
    assert dropped and 9 <= int(dropped[1]) <= 10, r.stdout


def test_prepare_data_stops_before_the_store_gets_data(tmp_path, chat_models):
    s = load_settings(SMOKE, [f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'work'}",
                              f"--model.name_or_path={chat_models['smollm2']}", "--model.gguf_file=null",
                              "--train.max_prompt_length=10"])
    with pytest.raises(SettingsError, match="GRPO_TRAIN__MAX_PROMPT_LENGTH"):
        pipeline.run(s, [st for st in all_stages() if st.name == "prepare_data"])
    store = LocalStore(tmp_path / "runs" / "smoke")
    assert not store.exists("stages/prepare_data.json") and not store.exists("data/train.jsonl")


def test_prepare_data_calls_every_reward_before_the_store_gets_data(tmp_path, chat_models):
    """The dry call is part of the data check, so `run` gets it too (prepare_data, before any model loads)."""
    s = load_settings(SMOKE, [f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'work'}",
                              f"--model.name_or_path={chat_models['smollm2']}", "--model.gguf_file=null",
                              '--rewards={"format": 1, "repetition_penalty": {"ngram_size": 0}}'])
    with pytest.raises(SettingsError, match=r"reward 'repetition_penalty' raised ZeroDivisionError.*"
                                            r"rewards\.repetition_penalty"):
        pipeline.run(s, [st for st in all_stages() if st.name == "prepare_data"])
    assert not LocalStore(tmp_path / "runs" / "smoke").exists("data/train.jsonl")


# ---------------------------------------------------------------- real training on CPU (slow)
@pytest.mark.slow
def test_a_column_reaches_the_reward_in_real_training_and_zero_prompts_never_train(tmp_path):
    """One real GRPO step on SmolLM2-135M with rows {question, answer, difficulty} and a user reward
    `by_difficulty(completions, difficulty, **kw)`: TRL hands it the column, value for value. Then a run
    whose prepared prompts are all longer than max_prompt_length stops in the train stage with exit 2 and
    no marker, no adapter."""
    rows = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
             "answer": f"{a} + {b} = {a + b}\n#### {a + b}", "difficulty": d}
            for a, b, d in [(2, 3, 1), (5, 4, 2), (7, 8, 3), (1, 1, 1), (9, 6, 2), (4, 4, 3), (3, 6, 1), (8, 2, 2)]]
    f = write_jsonl(tmp_path / "mine.jsonl", rows)
    log = tmp_path / "reward-calls.jsonl"
    common = [f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'work'}", f"--data.path={f}",
              "--data.max_samples=8", "--evaluation.enabled=false", "--report.enabled=false", "--export.merge=false",
              "--health.preflight_samples=0", "--train.max_steps=1", "--train.save_steps=1",
              "--train.per_device_train_batch_size=4",  # one prompt's group per step: one difficulty per call
              '--rewards={"tests.reward_fixtures:by_difficulty": 1.0, "partial_format": 0.5}']
    env = job_env(tmp_path, TEST_REWARD_LOG=str(log))
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "run", "--config", str(SMOKE), "--log_format=json"]
    r = subprocess.run([*cmd, "--run_id=own", *common], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    dry, *calls = [json.loads(line) for line in log.read_text().splitlines()]
    store = LocalStore(tmp_path / "runs" / "own")
    prepared = data.from_jsonl(store.read_text("data/train.jsonl"))
    assert {r["difficulty"] for r in prepared} == {1, 2, 3}
    # prepare_data's dry call first: the first rows' own values, each row's twice (its two synthetic completions)
    assert dry == [r["difficulty"] for r in prepared[: reward_calls.DRY_ROWS] for _ in range(2)]
    assert calls and all(len(c) == 4 for c in calls)  # one value per completion: 1 prompt x 4 generations
    assert all(len(set(c)) == 1 and c[0] in (1, 2, 3) for c in calls)  # the group's prompt's own difficulty
    metrics = [json.loads(line) for line in store.read_text("metrics.jsonl").splitlines()]
    assert any("rewards/by_difficulty/mean" in m for m in metrics)
    assert store.exists("stages/train.json")

    # prepared with a fitting length, then trained with one every prompt exceeds: exit 2 in the train stage
    s = load_settings(SMOKE, [*common, "--run_id=short"])
    pipeline.run(s, [st for st in all_stages() if st.name == "prepare_data"])
    r = subprocess.run([*cmd, "--run_id=short", *common, "--train.max_prompt_length=10"], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=900)
    assert r.returncode == EXIT_INVALID, r.stderr[-4000:]
    assert "GRPO_TRAIN__MAX_PROMPT_LENGTH" in r.stderr and "Traceback" not in r.stderr
    store = LocalStore(tmp_path / "runs" / "short")
    assert store.exists("stages/prepare_data.json")
    assert not store.exists("stages/train.json") and not store.exists("adapter/adapter_config.json")
