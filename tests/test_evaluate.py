"""Evaluation: scoring uses the correctness reward's extraction; the rows come from the held-out split
or `evaluation.data_path`, capped; greedy generation on the real model is deterministic."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
from test_answers import TABLE

from grpo_job import evaluate, machine, pipeline, preflight
from grpo_job.context import open_run
from grpo_job.settings import load_settings
from grpo_job.stages import stages as all_stages

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "examples" / "smoke.yaml"


def test_score_uses_the_correctness_extraction_and_counts_format_and_length():
    texts = [
        "<reasoning>6*12=72</reasoning>\n<answer>$72.0</answer>",  # right, whole format
        "<reasoning>hm</reasoning><answer>1,000</answer> trailing",  # right answer, format broken by the tail
        "the answer is 72",  # no answer block: not counted as correct
        "<answer>71</answer>",  # wrong
    ]
    m = evaluate.score(texts, [10, 20, 32, 2], ["72", "1000", "72", "72"], max_new_tokens=32)
    assert m["accuracy"] == 0.5
    assert m["format_rate"] == 0.25
    assert m["answer_tag_rate"] == 0.75
    assert m["clipped_rate"] == 0.25
    assert m["mean_length"] == 16.0
    assert m["partial_format"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)


def test_score_accuracy_on_the_answer_table():
    """The answer-checker table through the evaluation scorer: pair by pair, and as one batch."""
    texts = [f"<reasoning>r</reasoning><answer>{p}</answer>" for p, _, _ in TABLE]
    refs = [r for _, r, _ in TABLE]
    for text, ref, (_, _, ok) in zip(texts, refs, TABLE, strict=True):
        assert evaluate.score([text], [5], [ref], max_new_tokens=32)["accuracy"] == (1.0 if ok else 0.0), (text, ref)
    whole = evaluate.score(texts, [5] * len(texts), refs, max_new_tokens=32)["accuracy"]
    assert whole == pytest.approx(sum(ok for *_, ok in TABLE) / len(TABLE))


def test_score_uses_the_answer_type():
    texts = ["<answer>72.0</answer>", "<answer>YES</answer>"]
    assert evaluate.score(texts, [1, 1], ["72", "yes"], 32)["accuracy"] == 1.0
    # exact keeps case (issue 23 item 12): `YES` is the reference `YES`, not `yes`
    assert evaluate.score(texts, [1, 1], ["72", "YES"], 32, answer_type="exact")["accuracy"] == 0.5
    assert evaluate.score(texts, [1, 1], ["72", "yes"], 32, answer_type="exact")["accuracy"] == 0.0
    assert evaluate.score(texts, [1, 1], ["72", "yes"], 32, answer_type="math")["accuracy"] == 0.5


def test_score_leaves_out_the_answer_numbers_when_no_reward_reads_the_format():
    texts = ["\\boxed{72}", "<answer>72</answer>"]
    m = evaluate.score(texts, [4, 32], ["72", "72"], 32, answer_format=False)
    assert m == {"clipped_rate": 0.5, "mean_length": 18.0}


@pytest.mark.parametrize(("scores", "weights", "want"), [
    # TRL's `reward`: the weighted sum per completion, a skipped (NaN) score counting 0, then the mean
    ({"a": [1.0, 0.0], "b": [0.5, 0.5]}, {"a": 2.0, "b": 1.0}, {"reward": 1.5, "rewards": {"a": 0.5, "b": 0.5}}),
    ({"a": [1.0, math.nan]}, {"a": 1.0}, {"reward": 0.5, "rewards": {"a": 1.0}}),
    ({"a": [math.nan, math.nan], "b": [0.0, 1.0]}, {"a": 1.0, "b": {"weight": 0.5}},
     {"reward": 0.25, "rewards": {"a": None, "b": 0.5}}),
    ({"a": [1.0, 1.0]}, {"a": 0.0}, {"reward": 0.0, "rewards": {"a": 1.0}}),  # weight 0: logged only
])
def test_reward_means_weigh_as_trl_and_skip_what_was_not_scored(scores, weights, want):
    assert evaluate.reward_means(scores, weights) == want


def test_eval_rows_from_a_data_file_capped_by_max_samples(tmp_path):
    f = tmp_path / "test.jsonl"
    f.write_text("".join(json.dumps({"question": f"What is {i}+1?", "answer": f"{i}+1={i + 1}\n#### {i + 1}"}) + "\n"
                         for i in range(10)))
    s = load_settings(SMOKE, [f"--store.uri={tmp_path / 'runs'}", f"--evaluation.data_path={f}",
                              "--evaluation.max_samples=3"])
    rows = evaluate.eval_rows(open_run(s))
    assert [r["answer"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["prompt"][0]["role"] == "system" and rows[0]["prompt"][1]["content"] == "What is 0+1?"


def test_eval_rows_default_to_the_held_out_split_and_a_cpu_slice(tmp_path, monkeypatch):
    cpu = machine.Machine(gpu=False, vllm=False, unsloth=False, triton_interpreter=True)
    monkeypatch.setattr(evaluate.machine, "probe", lambda: cpu)
    s = load_settings(SMOKE, [f"--store.uri={tmp_path / 'runs'}", "--evaluation.cpu_samples=5"])
    pipeline.run(s, [st for st in all_stages() if st.name == "prepare_data"])
    assert len(evaluate.eval_rows(open_run(s))) == 5
    monkeypatch.setattr(evaluate.machine, "probe", lambda: dataclasses.replace(cpu, gpu=True))  # whole split on a GPU
    assert len(evaluate.eval_rows(open_run(s))) == 16


def test_missing_evaluation_file_is_a_settings_error(tmp_path):
    from grpo_job.errors import SettingsError
    from grpo_job.settings import environment

    s = load_settings(SMOKE, [f"--evaluation.data_path={tmp_path / 'nope.jsonl'}"])  # valid where the file may exist
    assert any("evaluation.data_path [GRPO_EVALUATION__DATA_PATH]: local data file" in p for p in environment.problems(s))
    with pytest.raises(SettingsError, match="GRPO_EVALUATION__DATA_PATH"):
        preflight.plan(s, all_stages())


@pytest.mark.parametrize("value, words", [
    ("evaluation", "for a Hub dataset's split"),  # a bare name: no file type
    ("openai/gsm8k", "name the split in data.eval_split"),
    ("s3://b/eval.jsonl", "copy the object into the pod"),
    ("builtin:addition", "evaluated on its own test split"),
])
def test_evaluation_data_path_is_a_local_file_by_its_form(value, words):
    """eval_rows reads a local file only: the schema refuses what it cannot read, saying what to do instead."""
    from grpo_job.errors import SettingsError

    with pytest.raises(SettingsError) as e:
        load_settings(SMOKE, [f"--evaluation.data_path={value}"])
    # named by where the value came from, here the command line (issue 23 item 12), not an environment variable
    assert "evaluation.data_path [--evaluation.data_path on the command line]" in str(e.value)
    assert words in str(e.value)
    assert "a local .jsonl/.json/.parquet/.csv file" in str(e.value)


BAD_EVAL_FILES = {
    "wrong columns": ('{"q": "What is 1+1?", "a": "2"}\n', "lacks column(s) ['question', 'answer']"),
    "malformed line": ('{"question": "What is 1+1?", "answer": "#### 2"}\n{"question": \n', "line 2: not valid JSON"),
    "empty": ("", "has no rows; point GRPO_EVALUATION__DATA_PATH at a file with data"),
}


@pytest.mark.parametrize("case", list(BAD_EVAL_FILES))
def test_the_data_check_reads_the_evaluation_file_as_eval_rows_does(tmp_path, case):
    """Before any model is loaded (`check`, prepare_data), naming evaluation.data_path, not data.path."""
    from grpo_job.errors import SettingsError

    text, words = BAD_EVAL_FILES[case]
    (tmp_path / "ev.jsonl").write_text(text)
    s = load_settings(SMOKE, [f"--store.uri={tmp_path / 'runs'}", f"--evaluation.data_path={tmp_path / 'ev.jsonl'}"])
    with pytest.raises(SettingsError) as e:
        preflight.load_and_check_data(s, tmp_path / "cache", lambda: None)
    assert words in str(e.value) and "evaluation.data_path [GRPO_EVALUATION__DATA_PATH]" in str(e.value), str(e.value)
    assert "GRPO_DATA__PATH" not in str(e.value)
    # the evaluate stage would have failed on it the same way, after loading the model
    with pytest.raises(SettingsError, match="GRPO_EVALUATION__DATA_PATH"):
        evaluate.eval_rows(open_run(s))
    # unused when the evaluation is off: not read
    off = load_settings(SMOKE, [f"--evaluation.data_path={tmp_path / 'ev.jsonl'}", "--evaluation.enabled=false"])
    assert "evaluation_rows" not in preflight.load_and_check_data(off, tmp_path / "cache", lambda: None)[2]


def test_check_counts_the_evaluation_rows_also_for_data_it_does_not_read(tmp_path):
    """A Hub dataset is not read by `check`, the local evaluation file is."""
    from grpo_job.errors import SettingsError

    f = tmp_path / "ev.jsonl"
    f.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) + "\n" for i in range(3)))
    base = [f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'work'}", "--data.path=org/ds"]
    assert preflight.plan(load_settings(SMOKE, [*base, f"--evaluation.data_path={f}"]), all_stages())["data_report"] == {"evaluation_rows": 3}
    f.write_text(json.dumps({"q": "no question column"}) + "\n")
    with pytest.raises(SettingsError, match=r"\(evaluation.data_path \[GRPO_EVALUATION__DATA_PATH\]\) lacks column"):
        preflight.plan(load_settings(SMOKE, [*base, f"--evaluation.data_path={f}"]), all_stages())


def test_a_column_setting_both_files_lack_is_named_once(tmp_path):
    """A misspelt answer column is the setting's fault: named on the training data, not again on an evaluation
    file that has the same columns (trial: that message told the user to give the evaluation file the training
    data's columns, which it had). An evaluation file that lacks a column the training data has is still named."""
    from grpo_job.errors import SettingsError

    train, ev = tmp_path / "train.jsonl", tmp_path / "ev.jsonl"
    for f in (train, ev):
        f.write_text("".join(json.dumps({"question": f"q{i}", "label": "B"}) + "\n" for i in range(3)))
    base = [f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'work'}", f"--data.path={train}",
            "--data.task=plain", "--data.prompt_column=question", f"--evaluation.data_path={ev}"]
    with pytest.raises(SettingsError) as e:
        preflight.plan(load_settings(SMOKE, [*base, "--data.answer_column=lable"]), all_stages())
    assert str(e.value).count("lacks column(s) ['lable']") == 1 and "did you mean 'label'" in str(e.value)
    assert "evaluation.data_path" not in str(e.value)
    ev.write_text("".join(json.dumps({"question": f"q{i}", "answer": "B"}) + "\n" for i in range(3)))
    with pytest.raises(SettingsError, match=r"ev.jsonl' \(evaluation.data_path \[GRPO_EVALUATION__DATA_PATH\]\) lacks "
                                            r"column\(s\) \['label'\]"):
        preflight.plan(load_settings(SMOKE, [*base, "--data.answer_column=label", "--data.eval_fraction=0"]), all_stages())


@pytest.mark.slow
def test_evaluate_base_stage_on_the_real_model_is_greedy_and_deterministic(tmp_path, tmp_path_factory):
    work = tmp_path_factory.getbasetemp() / "grpo-work"  # model cache shared with the other test modules
    s = load_settings(SMOKE, [f"--store.uri={tmp_path / 'runs'}", f"--work_dir={work}", "--run_id=ev",
                              "--evaluation.max_samples=3", "--evaluation.max_new_tokens=12"])
    out = pipeline.run(s, [st for st in all_stages() if st.name in ("prepare_data", "evaluate_base")])
    summary = out["evaluate_base"]
    assert summary["n"] == 3 and summary["max_new_tokens"] == 12 and summary["device"] == "cpu"
    assert 0 < summary["mean_length"] <= 12 and 0 <= summary["accuracy"] <= 1
    # every configured reward scored the completions, as the trainer calls it
    assert set(summary["rewards"]) == set(s.rewards) and isinstance(summary["reward"], float)
    saved = json.loads((tmp_path / "runs" / "ev" / "eval" / "base.json").read_text())
    assert len(saved["samples"]) == 3 and all(smp["completion"] for smp in saved["samples"])
    assert all(set(smp["rewards"]) == set(s.rewards) and "correct" in smp for smp in saved["samples"])
    # greedy: generating again gives the very same completions
    ctx = open_run(s)
    model, tok = evaluate.load_model(s, ctx, adapter=False)
    rows = evaluate.eval_rows(ctx)
    # each sample names the prompt text the model answered (the user's message: the prompt inside the template)
    assert [smp["prompt"] for smp in saved["samples"]] == [r["prompt"][-1]["content"] for r in rows[:3]]
    again = evaluate.generate(model, tok, [r["prompt"] for r in rows], 12, batch_size=2,
                              render=evaluate.prompt_renderer(s, ctx))
    assert [g[0] for g in again] == [smp["completion"] for smp in saved["samples"]]


@pytest.mark.slow
def test_a_task_in_another_format_is_scored_by_its_own_rewards_only(tmp_path, tmp_path_factory):
    """No reward reads `<answer>` (trial: a `\\boxed{}` task's report compared an `<answer>` accuracy of 0 with 0):
    the evaluation gives the run's rewards and no `<answer>` numbers, and the report shows what was measured."""
    from grpo_job.artifacts import report
    from grpo_job.store import LocalStore

    work = tmp_path_factory.getbasetemp() / "grpo-work"
    s = load_settings(SMOKE, [f"--store.uri={tmp_path / 'runs'}", f"--work_dir={work}", "--run_id=own",
                              "--evaluation.max_samples=3", "--evaluation.max_new_tokens=12",
                              '--rewards={"tests.reward_fixtures:length_reward": 1.0, "tests.reward_fixtures:weighted_length": 0.0}'])
    summary = pipeline.run(s, [st for st in all_stages() if st.name in ("prepare_data", "evaluate_base")])["evaluate_base"]
    assert not {"accuracy", "format_rate", "partial_format", "answer_tag_rate"} & set(summary)
    mean = summary["rewards"]["tests.reward_fixtures:length_reward"]
    assert 0 < mean <= 1 and summary["reward"] == pytest.approx(mean, abs=1e-4)  # weighted_length weighs 0
    saved = json.loads((tmp_path / "runs" / "own" / "eval" / "base.json").read_text())
    assert all("correct" not in smp and len(smp["rewards"]) == 2 for smp in saved["samples"])
    md = report.report_markdown(LocalStore(tmp_path / "runs" / "own"))
    assert f"| reward tests.reward_fixtures:length_reward | {mean:.3f} | – | – |" in md
    assert "| reward (weighted total) |" in md and "| accuracy |" not in md and "<answer>` block" not in md
    assert "no reward reads the `<answer>` format, so there is no accuracy row" in md  # says why


def test_merge_adapter_writes_base_plus_the_lora_update(tmp_path):
    """The vLLM child evaluates merged weights: every LoRA module's weight is W + scaling * B @ A, the
    others are the base's, and the folder loads back as a plain transformers model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(tmp_path / "base")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.bfloat16)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    lora.save_pretrained(tmp_path / "adapter")
    layer = lora.base_model.model.model.layers[1].self_attn.q_proj
    expected = layer.base_layer.weight.float() + 2.0 * layer.lora_B["default"].weight.float() @ layer.lora_A["default"].weight.float()
    untouched = lora.base_model.model.model.layers[1].self_attn.k_proj.weight.clone()

    out = evaluate.merge_adapter(str(tmp_path / "base"), str(tmp_path / "adapter"), str(tmp_path / "merged"), device="cpu")
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    got = merged.model.layers[1].self_attn.q_proj.weight.float()
    assert not hasattr(merged, "peft_config") and (tmp_path / "merged" / "model.safetensors").is_file()
    assert torch.allclose(got, expected, atol=2e-2) and not torch.allclose(got, layer.base_layer.weight.float(), atol=2e-2)
    assert torch.equal(merged.model.layers[1].self_attn.k_proj.weight, untouched)


@pytest.mark.parametrize("which, clipped, scores, says", [
    # trial X: the base model scored 1.000 on the evaluation rows, every completion cut off, and nothing was said
    ("base", 1.0, {"format": [1.0, 1.0], "correctness": [1.0, 0.9]},
     ["100% of the completions were cut off at 48 new tokens", "the base model already scores format 1.000, "
      "correctness 0.950 on the 2 evaluation rows"]),
    ("base", 0.25, {"format": [1.0, 0.0], "correctness": [1.0, 1.0]}, []),  # one reward has room to grow
    ("trained", 0.0, {"format": [1.0, 1.0], "correctness": [1.0, 1.0]}, []),  # training's aim, not a fault
    ("trained", 0.5, {"format": [1.0, 1.0], "correctness": [1.0, 1.0]}, ["50% of the completions were cut off"]),
    ("base", 0.0, {"format": [1.0, float("nan")], "correctness": [2.0, 2.0]}, []),  # a score outside [0, 1]
], ids=["cut-and-solved", "room", "trained", "trained-cut", "unbounded"])
def test_an_evaluation_says_when_completions_are_cut_or_the_base_model_has_solved_the_task(which, clipped, scores, says):
    s = load_settings(SMOKE, ["--train.max_completion_length=48"])
    notes = evaluate.recipe_notes(s, which, clipped, 48, scores)
    assert len(notes) == len(says) and all(n.startswith(w) for n, w in zip(notes, says, strict=True)), notes
    if clipped >= 0.5:
        assert "raise train.max_completion_length [GRPO_TRAIN__MAX_COMPLETION_LENGTH]" in notes[0]
        s = load_settings(SMOKE, ["--evaluation.max_new_tokens=48"])
        assert "raise evaluation.max_new_tokens" in evaluate.recipe_notes(s, which, clipped, 48, scores)[0]
