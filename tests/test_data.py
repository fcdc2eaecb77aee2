"""Data: task mapping, sources, missing columns, the built-in generator."""

import json

import pytest

from grpo_job import data, preflight
from grpo_job.errors import SettingsError
from grpo_job.rewards import correctness_reward
from grpo_job.settings import DataSettings


def test_gsm8k_answer_after_hashes_commas_stripped():
    assert data.gsm8k_answer("She pays 2 * 500 = 1,000 dollars.\n#### 1,000") == "1000"
    assert data.gsm8k_answer("#### -4") == "-4"


@pytest.mark.parametrize("solution, answer", [
    ("#### 1,000,000", "1000000"),
    ("#### $1,234.50", "$1234.50"),
    ("#### (1, 2)", "(1, 2)"),  # a pair: every comma was stripped, `(1 2)`, read as 3 (new-user trial)
    ("#### 3,4", "3,4"),  # a list, not 34
    ("#### 12,3456", "12,3456"),
])
def test_gsm8k_answer_drops_thousands_separators_only(solution, answer):
    assert data.gsm8k_answer(solution) == answer
    assert correctness_reward(["<answer>3</answer>"], answer=[data.gsm8k_answer("#### (1, 2)")]) == [0.0]


@pytest.mark.parametrize("content, words", [
    ('[{"q": "a", "ans": "1"}, "oops"]', "element 1 of the array is str"),
    ('[[1, 2]]', "element 0 of the array is list"),
    ('{"rows": [{"q": "a", "ans": "1"}]}', "found an object with keys ['rows']"),
    ('"text"', "found str"),
])
def test_a_json_file_of_another_shape_says_which(tmp_path, content, words):
    """A JSON array with a non-object element was a traceback (exit 1); other shapes said "no rows"."""
    path = tmp_path / "d.json"
    path.write_text(content)
    with pytest.raises(SettingsError, match="array of row objects") as e:
        data.read_rows(path)
    assert words in str(e.value)
    path.write_text('{"data": [{"q": "a", "ans": "1"}]}')
    assert data.read_rows(path) == [{"q": "a", "ans": "1"}]


def test_a_list_or_object_answer_is_its_json_text_with_a_warning(caplog):
    s = DataSettings(task="plain", prompt_column="q", answer_column="ans")
    rows = data.map_rows([{"q": "Is 5 prime?", "ans": ["yes"]}, {"q": "x", "ans": {"v": "yes"}}, {"q": "y", "ans": "no"}],
                         s, "f")
    assert [r["answer"] for r in rows] == ['["yes"]', '{"v": "yes"}', "no"]  # not Python's ['yes']
    assert "1 of 3 reference answers in column 'ans' of f are lists;" in caplog.text  # accepted answers, maybe
    caplog.clear()  # an object is a json_schema reference: nothing to say (trial: a warning on every run)
    data.map_rows([{"q": "x", "ans": {"v": "yes"}}], s, "f")
    assert "reference answers" not in caplog.text


def test_gsm8k_answers_without_the_marker_are_warned(caplog):
    """A worked solution without `####` became the whole reference: parsable as text, never earned (trial)."""
    rows = data.map_rows([{"question": "q1", "answer": "48 + 24 = 72 so 72"}, {"question": "q2", "answer": "x\n#### 5"}],
                         DataSettings(), "f")
    assert rows[0]["answer"] == "48 + 24 = 72 so 72" and rows[1]["answer"] == "5"
    assert "1 of 2 answers in column 'answer' of f have no `####`" in caplog.text and "GRPO_DATA__TASK=plain" in caplog.text


def test_math_solutions_without_a_box_are_warned_and_the_column_hint_says_what_the_task_reads(caplog):
    """A code task's `problem`/`solution` columns were told they "fit GRPO_DATA__TASK=math"; following it gave every
    row an empty reference and no warning (trial)."""
    rows = data.map_rows([{"problem": "Write add.", "solution": "def add(a, b):\n    return a + b"},
                          {"problem": "p", "solution": "so $\\boxed{2}$"}], DataSettings(task="math"), "f")
    assert [r["answer"] for r in rows] == ["", "2"]
    assert "1 of 2 answers in column 'solution' of f have no `\\boxed{}`" in caplog.text
    assert "GRPO_DATA__TASK=plain" in caplog.text and "reference solution too" in caplog.text
    with pytest.raises(SettingsError) as e:
        data.check_columns(["problem", "solution", "tests"], DataSettings(), "f")
    assert "these columns fit GRPO_DATA__TASK=math (its reference answer: the answer in the last \\boxed{} of " \
           "'solution')" in str(e.value)


def test_a_bad_row_is_named_by_its_content_not_a_shuffled_position():
    """Rows are shuffled and held out before mapping, so `row 2` was no line of the file (new-user trial)."""
    s = DataSettings(task="plain", prompt_column="q", answer_column="ans")
    with pytest.raises(SettingsError, match='a row of f has no value in column.*"q": "second"'):
        data.map_rows([{"q": "first", "ans": "1"}, {"q": "second", "ans": None}], s, "f")


def test_the_held_out_reference_answers_are_checked_too(tmp_path):
    """The evaluation scores the held-out rows: an unreadable reference there was never counted."""
    from grpo_job.settings import load_settings

    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": "" if i == 0 else str(i)}) + "\n" for i in range(10)))
    s = load_settings(overrides=[f"--data.path={path}", "--data.task=plain", "--data.eval_fraction=0.1",
                                 "--data.seed=3", f"--work_dir={tmp_path}"])
    train, heldout, summary = preflight.load_and_check_data(s, tmp_path / "cache", lambda: None)
    empty_held_out = any(r["answer"] == "" for r in heldout)
    assert summary["unparsable_held_out_answers"] == int(empty_held_out)
    assert summary["unparsable_answers"] == int(not empty_held_out)


@pytest.mark.parametrize("path", ["ABSOLUTE", "./myds", "myds"])
def test_a_folder_of_files_as_data_path_says_what_the_job_reads(tmp_path, monkeypatch, path):
    """A folder that `datasets` did not save: `./myds` was "does not exist", `myds` a Hub id (new-user trial)."""
    from grpo_job.settings import environment, load_settings

    (tmp_path / "myds").mkdir()
    (tmp_path / "myds" / "train.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    monkeypatch.chdir(tmp_path)
    s = load_settings(overrides=[f"--data.path={tmp_path / 'myds' if path == 'ABSOLUTE' else path}"])
    [problem] = [p for p in environment.problems(s) if p.startswith("data.path")]
    assert "is a folder" in problem and "save_to_disk" in problem and "GRPO_DATA__PATH at one of the folder's files" in problem
    assert not preflight.hub_problems(s, model_on_hub=False)  # not asked of the Hub as a dataset id


def _saved(tmp_path, splits):
    """A folder written by datasets' save_to_disk: a Dataset (splits None) or a DatasetDict."""
    import datasets

    def table(split, n):
        return datasets.Dataset.from_list([{"q": f"{split} {i} + 1?", "ans": str(i + 1)} for i in range(n)])

    folder = tmp_path / "saved"
    (table("all", 20) if splits is None else datasets.DatasetDict({k: table(k, n) for k, n in splits.items()})
     ).save_to_disk(str(folder))
    return folder


@pytest.mark.parametrize("form", ["absolute", "./relative", "bare name"])
def test_a_saved_dataset_folder_is_read_like_a_file(tmp_path, monkeypatch, form):
    """`Dataset.save_to_disk` output as data.path: its rows, data.eval_fraction held out (as for a file)."""
    from grpo_job.settings import environment, load_settings

    folder = _saved(tmp_path, None)
    monkeypatch.chdir(tmp_path)
    path = {"absolute": str(folder), "./relative": "./saved", "bare name": "saved"}[form]
    s = load_settings(overrides=[f"--data.path={path}", "--data.task=plain", "--data.prompt_column=q",
                                 "--data.answer_column=ans", "--data.eval_fraction=0.25"])
    assert not [p for p in environment.problems(s) if p.startswith("data.path")]
    assert not preflight.hub_problems(s, model_on_hub=False)
    train, heldout, summary = data.prepare(s.data, tmp_path / "cache")
    assert (len(train), len(heldout)) == (15, 5)
    assert {r["answer"] for r in train + heldout} == {str(i + 1) for i in range(20)}


def test_a_saved_dataset_dict_gives_its_splits_as_a_hub_dataset_does(tmp_path):
    folder = _saved(tmp_path, {"train": 12, "test": 4})
    s = DataSettings(path=str(folder), task="plain", prompt_column="q", answer_column="ans")
    train, heldout, _ = data.prepare(s, tmp_path / "cache")
    assert all(r["prompt"][-1]["content"].startswith("train") for r in train) and len(train) == 12
    assert all(r["prompt"][-1]["content"].startswith("test") for r in heldout) and len(heldout) == 4
    # no such split: the error names the splits there are and the settings that pick them
    with pytest.raises(SettingsError, match=r"DatasetDict folder .* has splits \['test', 'train'\], not 'validation', "
                                            r"which data.eval_split \[GRPO_DATA__EVAL_SPLIT\] names: set it to one"):
        data.prepare(s.model_copy(update={"eval_split": "validation"}), tmp_path / "cache")
    with pytest.raises(SettingsError, match=r"not 'training', which data.split \[GRPO_DATA__SPLIT\] names") as e:
        data.prepare(s.model_copy(update={"split": "training"}), tmp_path / "cache")
    assert "eval_fraction" not in str(e.value)  # the training split's own fix, not the evaluation's
    # eval_split null: the held-out rows come from the training split
    train, heldout, _ = data.prepare(s.model_copy(update={"eval_split": None, "eval_fraction": 0.25}), tmp_path / "cache")
    assert (len(train), len(heldout)) == (9, 3)


def test_evaluation_data_path_takes_one_saved_split_not_a_dataset_dict(tmp_path):
    from grpo_job.settings import environment, load_settings

    folder = _saved(tmp_path, {"train": 12, "test": 4})
    mapping = ["--data.task=plain", "--data.prompt_column=q", "--data.answer_column=ans"]
    s = load_settings(overrides=[f"--evaluation.data_path={folder}", *mapping])
    [problem] = [p for p in environment.problems(s) if p.startswith("evaluation.data_path")]
    assert "saved DatasetDict" in problem and str(folder / "test") in problem
    split = load_settings(overrides=[f"--evaluation.data_path={folder / 'test'}", *mapping])
    assert not [p for p in environment.problems(split) if p.startswith("evaluation.data_path")]
    rows = data.evaluation_rows(str(folder / "test"), split.data)
    assert [r["answer"] for r in rows] == ["1", "2", "3", "4"]


def test_builtin_arithmetic_is_reproducible_consistent_and_disjoint(tmp_path):
    s = DataSettings(path="builtin:arithmetic", max_samples=50, eval_samples=10)
    train, heldout, summary = data.prepare(s, tmp_path)
    again, _, _ = data.prepare(s, tmp_path)
    assert train == again and summary["train_rows"] == 50 and summary["eval_rows"] == 10
    assert not {r["prompt"][1]["content"] for r in train} & {r["prompt"][1]["content"] for r in heldout}
    for r in train:
        assert r["prompt"][0] == {"role": "system", "content": s.system_prompt}
        assert r["answer"].lstrip("-").isdigit()
    # the generated answers are right: recompute a few from the templates' reasoning lines
    raw = data.generate_arithmetic(20, 0)
    for row in raw:
        steps, final = row["answer"].split("####")
        last = steps.strip().rstrip(".").split("=")[-1].strip()
        assert last == final.strip()


def test_local_jsonl_mapped_and_held_out(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"question": f"q{i}?", "answer": f"work\n#### {i}"}) + "\n" for i in range(40)))
    train, heldout, summary = data.prepare(DataSettings(path=str(f), eval_fraction=0.25), tmp_path)
    assert (len(train), len(heldout)) == (30, 10)
    assert {r["answer"] for r in train + heldout} == {str(i) for i in range(40)}
    # a perfect completion for a prepared row earns the correctness reward: the mapping and rewards agree
    row = train[0]
    assert correctness_reward([f"<reasoning>.</reasoning><answer>{row['answer']}</answer>"], answer=[row["answer"]]) == [1.0]


@pytest.mark.parametrize("rows, fraction, evaluation, expected, note", [
    (40, 0.25, [], (30, 10), None),
    (40, 0.0, [], (40, 0), None),  # 0 holds out nothing
    (2, 0.05, [], (1, 1), "set data.eval_fraction=0 to train on every row"),  # half of a 2-row file, said out loud
    # 10% for 5% is within rounding, but one row is no accuracy (trial: 28 rows held out 1)
    (10, 0.05, [], (9, 1), "the evaluate stages score 1 held-out row (1 of 10 rows held out (10%) for "
                           "data.eval_fraction=0.05): one row moves a share (the accuracy, a 0/1 reward's mean) "
                           "by 100 points"),
    (200, 0.05, [], (190, 10), None),
    # capped by evaluation.max_samples (trial: "score 3 rows" with max_samples 2): counted, and the cap named
    (40, 0.25, ["--evaluation.max_samples=2"], (30, 10), "score 2 held-out rows (10 of 40 rows held out (25%) for "
                                                          "data.eval_fraction=0.25, evaluation.max_samples=2)"),
    (40, 0.25, ["--evaluation.max_samples=20"], (30, 10), None),
    (10, 0.01, [], (9, 1), "1 of 10 rows held out (10%)"),
    # one row cannot be split: it already trains; what is missing is something to evaluate
    (1, 0.05, [], (1, 0), "the evaluate stages have nothing to score; set evaluation.data_path"),
    (1, 0.05, ["--evaluation.enabled=false"], (1, 0), None),
    (1, 0.05, ["eval_file"], (1, 0), None),
    # held-out rows nothing evaluates are lost to training
    (2, 0.05, ["eval_file"], (1, 1), "removed from training and never used (the evaluation scores evaluation.data_path="),
    (40, 0.25, ["eval_file"], (30, 10), "10 of 40 rows held out (25%) for data.eval_fraction=0.25 are removed"),
    (40, 0.25, ["--evaluation.enabled=false"], (30, 10), "never used (evaluation.enabled=false)"),
])
def test_the_hold_out_note_fits_the_evaluation_settings(tmp_path, caplog, rows, fraction, evaluation, expected, note):
    from grpo_job.settings import load_settings

    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"question": f"q{i}?", "answer": f"#### {i}"}) + "\n" for i in range(rows)))
    (tmp_path / "ev.jsonl").write_text(json.dumps({"question": "q?", "answer": "#### 1"}) + "\n")
    args = [f"--evaluation.data_path={tmp_path / 'ev.jsonl'}" if a == "eval_file" else a for a in evaluation]
    s = load_settings(None, [f"--data.path={f}", f"--data.eval_fraction={fraction}", *args])
    with caplog.at_level("WARNING"):
        train, heldout, summary = preflight.load_and_check_data(s, tmp_path, lambda: None)
    assert (len(train), len(heldout)) == expected
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data: ")]
    if note is None:
        assert "warnings" not in summary and not logged, logged
    else:
        assert len(summary["warnings"]) == 1 and note in summary["warnings"][0], summary["warnings"]
        assert logged == [f"data: {summary['warnings'][0]}"]
    if expected[1] == 0:  # the row trains already: never advise data.eval_fraction=0 for it
        assert "eval_fraction=0" not in str(summary.get("warnings"))


def test_hold_out_is_seeded_and_keeps_file_order():
    rows = [{"i": i} for i in range(20)]
    train, heldout = data.hold_out(rows, 0.2, seed=3)
    assert (train, heldout) == data.hold_out(rows, 0.2, seed=3) and len(heldout) == 4
    assert heldout != data.hold_out(rows, 0.2, seed=4)[1]
    assert sorted(train + heldout, key=lambda r: r["i"]) == rows
    assert train == sorted(train, key=lambda r: r["i"])


def test_no_hold_out_warns_that_evaluation_has_nothing_to_score():
    from grpo_job.settings import load_settings

    s = load_settings(None, ["--data.path=rows.jsonl", "--data.eval_fraction=0"])
    assert any("evaluation.data_path" in w for w in s.warnings())
    quiet = [["--data.path=rows.jsonl", "--data.eval_fraction=0", "--evaluation.enabled=false"],
             ["--data.path=rows.jsonl", "--data.eval_fraction=0", "--evaluation.data_path=test.jsonl"],
             ["--data.path=org/ds", "--data.eval_fraction=0"],  # the Hub dataset's eval_split holds out
             ["--data.path=builtin:addition", "--data.eval_fraction=0"]]
    for args in quiet:
        assert not any("holds out no rows" in w for w in load_settings(None, args).warnings()), args


def test_missing_column_named_with_what_was_found(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"problem": "1+1", "solution": "2"}) + "\n")
    with pytest.raises(SettingsError) as e:
        data.prepare(DataSettings(path=str(f)), tmp_path)
    assert "['question', 'answer']" in str(e.value) and "['problem', 'solution']" in str(e.value)
    assert data.peek_columns(f) == ["problem", "solution"]


def test_csv_and_parquet_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(10)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    (tmp_path / "d.csv").write_text("question,answer\n" + "".join(f"q{i},#### {i}\n" for i in range(10)))
    for name in ("d.parquet", "d.csv"):
        train, heldout, _ = data.prepare(DataSettings(path=str(tmp_path / name)), tmp_path)
        assert len(train) + len(heldout) == 10
        assert data.peek_columns(tmp_path / name) == ["question", "answer"]


def test_builtin_addition_carries_a_worked_example_and_the_sum():
    rows = data.generate_addition(20, 0)
    assert rows == data.generate_addition(20, 0)  # reproducible from the seed
    for r in rows:
        assert r["question"].count("<answer>") == 1 and r["question"].endswith("?")
        a, b = (int(x) for x in r["question"].rsplit("What is ", 1)[1].rstrip("?").split(" + "))
        assert data.gsm8k_answer(r["answer"]) == str(a + b)
    train, test = data.BUILTIN_DATASETS["addition"]("train"), data.BUILTIN_DATASETS["addition"]("test")
    assert len(train) == 256 and len(test) == 64 and train[:64] != test


@pytest.mark.parametrize("name, text", [("empty.jsonl", ""), ("blank.jsonl", "\n\n"), ("empty.csv", "")])
def test_check_says_an_empty_file_is_empty(tmp_path, name, text):
    """Found by a new user: an empty file was reported as missing columns, pointing at the column settings."""
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(SettingsError, match="has no rows; point GRPO_DATA__PATH"):
        data.peek_columns(f)


def test_check_reads_a_saved_dataset_dicts_columns_and_splits(tmp_path):
    """`check` on a DatasetDict folder with other columns, or without the split named, is exit 2 before
    any model is loaded; it said nothing (new-user trial)."""
    from tests.test_own_task import check

    folder = _saved(tmp_path, {"train": 12, "test": 4})  # columns q, ans
    r = check(tmp_path, f"--data.path={folder}")  # gsm8k: question, answer
    assert r.returncode == 2 and "question" in r.stderr, r.stderr[-2000:]
    r = check(tmp_path, f"--data.path={folder}", "--data.task=plain", "--data.prompt_column=q",
              "--data.answer_column=ans", "--data.eval_split=validation")
    assert r.returncode == 2 and "has splits ['test', 'train'], not 'validation'" in r.stderr, r.stderr[-2000:]
    r = check(tmp_path, f"--data.path={folder}", "--data.task=plain", "--data.prompt_column=q",
              "--data.answer_column=ans")
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_narrow_float_answers_read_as_written_from_a_saved_folder_and_parquet(tmp_path, dtype):
    """0.8 in a float32 column arrived as '0.800000011920929' and never scored (new-user trial)."""
    import datasets

    table = datasets.Dataset.from_dict({"prompt": ["a?", "b?"], "answer": [0.8, 0.1]},
                                       features=datasets.Features({"prompt": datasets.Value("string"),
                                                                   "answer": datasets.Value(dtype)}))
    table.save_to_disk(str(tmp_path / "saved"))
    table.to_parquet(str(tmp_path / "t.parquet"))
    for path in (tmp_path / "saved", tmp_path / "t.parquet"):
        train, _, _ = data.prepare(DataSettings(path=str(path), task="plain", eval_fraction=0), tmp_path / "cache")
        assert [r["answer"] for r in train] == ["0.8", "0.1"]


def test_an_empty_saved_split_is_named_with_the_fix(tmp_path):
    """An empty split was a traceback (IndexError inside datasets) or "data file ... has no rows" that
    named neither the split nor data.eval_split (new-user trial)."""
    import datasets

    rows = datasets.Dataset.from_list([{"q": f"{i}?", "ans": str(i)} for i in range(6)])
    empty = datasets.Dataset.from_dict({"q": [], "ans": []}, features=rows.features)
    datasets.DatasetDict({"train": rows, "test": empty}).save_to_disk(str(tmp_path / "dd"), num_shards={"train": 1, "test": 1})
    s = DataSettings(path=str(tmp_path / "dd"), task="plain", prompt_column="q", answer_column="ans")
    with pytest.raises(SettingsError) as e:
        data.prepare(s, tmp_path / "cache")
    assert "'test'" in str(e.value) and ("has no rows" in str(e.value) or "cannot be read back" in str(e.value))
    assert "GRPO_DATA__EVAL_SPLIT" in str(e.value) or "drop the empty one" in str(e.value)
    train, heldout, _ = data.prepare(s.model_copy(update={"eval_split": None, "eval_fraction": 0.5}), tmp_path / "cache")
    assert (len(train), len(heldout)) == (3, 3)


@pytest.mark.parametrize("form", ["saved/", "sub/saved", "sub/saved/"])
def test_a_saved_folder_in_other_relative_forms(tmp_path, monkeypatch, form):
    """`saved/` (as tab completion writes it) and `sub/saved` were refused as neither a Hub id nor a file."""
    from grpo_job.settings import load_settings

    (tmp_path / "sub").mkdir()
    _saved(tmp_path / "sub" if form.startswith("sub") else tmp_path, None)
    monkeypatch.chdir(tmp_path)
    s = load_settings(overrides=[f"--data.path={form}", "--data.task=plain", "--data.prompt_column=q",
                                 "--data.answer_column=ans", "--data.eval_fraction=0"])
    assert len(data.prepare(s.data, tmp_path / "cache")[0]) == 20


def test_evaluation_data_path_not_there_yet_is_a_machine_problem_not_a_form_error(tmp_path):
    """A split folder path validated where it does not exist (a CI runner rendering the pod) was refused
    as "not a local data file ... give its extension" (new-user trial)."""
    from grpo_job.settings import environment, load_settings

    s = load_settings(overrides=[f"--evaluation.data_path={tmp_path / 'mydd' / 'test'}"])
    [problem] = [p for p in environment.problems(s) if p.startswith("evaluation.data_path")]
    assert "does not exist on this machine" in problem


def test_lists_and_objects_arrow_would_change_are_kept_as_json_text(tmp_path, caplog):
    """A json_schema task whose schemas differ across rows passed `check` and the preflight, then crashed at the
    first training step: the trainer's Arrow table gave every row the union of the keys, missing ones null
    (`"nickname": null`, no valid JSON Schema). What the data check, the preflight and the trainer read must be
    the same values (new-user trial)."""
    from datasets import Dataset

    plain = {"type": "object", "properties": {"name": {"type": "string"}}}
    optional = {"type": "object", "properties": {"name": {"type": "string"}, "nickname": {"type": "string"}}}
    rows = [{"prompt": f"Who is person {i}?", "answer": {"name": f"P{i}"}, "schema": optional if i == 3 else plain,
             "tests": ["assert f() == 1"] if i % 2 else "assert f() == 1", "meta": {"source": "mine", "n": i}}
            for i in range(8)]
    path = tmp_path / "people.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, heldout, _ = data.prepare(DataSettings(path=str(path), task="plain", eval_fraction=0.25), tmp_path / "c")
    prepared = train + heldout
    by_id = {r["prompt"][-1]["content"]: r for r in prepared}
    for i, row in enumerate(rows):
        got = by_id[row["prompt"]]
        assert json.loads(got["schema"]) == row["schema"]  # JSON text: every key as written, none added
        assert got["tests"] == (json.dumps(row["tests"]) if i % 2 else row["tests"])  # strings stay strings
        assert got["meta"] == row["meta"]  # one shape in every row: Arrow keeps it, so it stays an object
    assert "'schema'" in caplog.text and "'tests'" in caplog.text and "'meta'" not in caplog.text
    # what the trainer gets (train.py: Dataset.from_list) is what the checks read
    assert Dataset.from_list(train).to_list() == train
    # and the rewards read it: the optional property is no null there
    from grpo_job.rewards import json_schema_reward

    row = by_id["Who is person 3?"]
    assert json_schema_reward(['{"name": "P3"}'], answer=[row["answer"]], schema=[row["schema"]]) == [1.0]


def test_a_conversational_prompt_held_as_json_text_is_sent_as_its_messages(tmp_path):
    """A CSV cell holds a conversational prompt as JSON text; it was sent as one user message quoting the JSON,
    under the default system prompt (recipe trial). Text that only looks like a list stays text."""
    import csv

    messages = [{"role": "system", "content": "Answer in LaTeX."}, {"role": "user", "content": "What is 1/2 + 1/4?"}]
    f = tmp_path / "chat.csv"
    with f.open("w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["prompt", "answer"])
        w.writerow([json.dumps(messages), "\\frac{3}{4}"])
        w.writerow(["[1, 2, 3] sums to what?", "6"])
    train, _, _ = data.prepare(DataSettings(path=str(f), task="plain", eval_fraction=0), tmp_path / "c")
    by_answer = {r["answer"]: r["prompt"] for r in train}
    assert by_answer["\\frac{3}{4}"] == messages  # its own system message, no default one in front
    assert by_answer["6"][-1] == {"role": "user", "content": "[1, 2, 3] sums to what?"}


def test_a_prompt_ending_with_the_assistant_turn_that_answers_is_refused():
    """A chat dataset's `messages` taken whole as the prompt showed the model its answer, and passed `check`
    (trial). An assistant turn that does not hold the answer is TRL's prefilled start and stays."""
    s = DataSettings(task="plain", prompt_column="messages", answer_column="final")
    ask = {"role": "user", "content": "A bed is 3 m by 4 m. Its area?"}
    answered = [{"messages": [ask, {"role": "assistant", "content": "12 m^2"}], "final": "12"},
                {"messages": [ask], "final": "12"}]
    with pytest.raises(SettingsError, match=r"1 of 2 prompts of f end with an assistant turn that holds the row's "
                                            r"reference answer \(e.g. '12 m\^2' for answer '12'\).*column 'messages'"):
        data.map_rows(answered, s, "f")
    prefilled = [{"messages": [ask, {"role": "assistant", "content": "Let me think."}], "final": "12"}]
    assert data.map_rows(prefilled, s, "f")[0]["prompt"][-1] == {"role": "assistant", "content": "Let me think."}


@pytest.mark.parametrize("settings, rewards, words", [
    # the rows' own system message replaces data.system_prompt, which asks for the format
    ({"prompt_column": "messages"}, {"format": 0.5, "correctness": 2.0},
     "rewards format, correctness score the <reasoning>/<answer> format.*4 of 4 rows bring their own system message"),
    ({"prompt_column": "q", "system_prompt": None}, {"correctness": 2.0}, "data.system_prompt is off"),
    ({"prompt_column": "q", "system_prompt": "Be brief."}, {"correctness": 2.0}, "data.system_prompt is set without it"),
    ({"prompt_column": "messages"}, {"repetition_penalty": 1.0}, None),  # nothing reads the format
    ({"prompt_column": "q"}, {"correctness": 2.0}, None),  # the default system prompt asks for it
    ({"prompt_column": "messages", "few_shot": [{"prompt": "1+1?", "completion": "<reasoning>1+1</reasoning>"
                                                 "<answer>2</answer>"}]}, {"correctness": 2.0}, None),
])
def test_a_reward_that_reads_the_answer_format_needs_a_prompt_that_asks_for_it(tmp_path, settings, rewards, words):
    from grpo_job.settings import load_settings

    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({
        "messages": [{"role": "system", "content": "You are a careful tutor."},
                     {"role": "user", "content": f"What is {i} plus 3?"}],
        "q": f"What is {i} plus 3?", "final": str(i + 3)}) + "\n" for i in range(4)))
    s = load_settings(overrides=[f"--data.path={path}", "--data.task=plain", "--data.answer_column=final",
                                 "--data.eval_fraction=0", f"--work_dir={tmp_path}", f"--rewards={json.dumps(rewards)}",
                                 *(f"--data.{k}={json.dumps(v) if v is None or not isinstance(v, str) else v}"
                                   for k, v in settings.items())])
    if words is None:
        preflight.load_and_check_data(s, tmp_path / "cache", lambda: None)
        return
    with pytest.raises(SettingsError, match=words):
        preflight.load_and_check_data(s, tmp_path / "cache", lambda: None)


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_a_csv_file_separated_otherwise_than_by_commas_is_read(tmp_path, sep):
    """A spreadsheet saves `;` where the decimal mark is a comma: its header was read as one column (trial).
    A comma file whose text holds semicolons stays a comma file."""
    f = tmp_path / "d.csv"
    f.write_text(f"question{sep}answer\nWhat is 1,5 + 1?{sep}2,5\n", encoding="utf-8-sig")
    assert data.peek_columns(f) == ["question", "answer"]
    assert data.read_rows(f) == [{"question": "What is 1,5 + 1?", "answer": "2,5"}]
    g = tmp_path / "e.csv"
    g.write_text('question,answer\n"a; b; c?",1\n')
    assert data.read_rows(g) == [{"question": "a; b; c?", "answer": "1"}]
    # a header name holding a comma does not make it a comma file (second trial: three false alarms)
    h = tmp_path / "h.csv"
    h.write_text(f'question{sep}answer{sep}"note, free text"\nWhat is 2?{sep}2{sep}x\n')
    assert data.peek_columns(h) == ["question", "answer", "note, free text"]


def test_a_csv_column_named_twice_is_an_error(tmp_path):
    """csv.DictReader keeps the last of two equal names' values without a word: the answer was another column's
    text (trial)."""
    f = tmp_path / "d.csv"
    f.write_text("prompt;answer;answer\nWhat is 2+2?;4;rope\n")
    with pytest.raises(SettingsError, match=r"column\(s\) \['answer'\] appear twice in the header"):
        data.read_rows(f)


def test_a_nested_field_is_a_column_by_its_dotted_name(tmp_path):
    """`data.prompt_column: input.text` (datasets' `flatten()` name) read no nested field: the file had to be
    rewritten (trial). JSONL objects and Parquet structs alike; a misspelt field names what the object holds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": i, "input": {"text": f"What is {i} plus 3?"}, "target": {"value": str(i + 3)}} for i in range(4)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.parquet"):
        s = DataSettings(path=str(tmp_path / name), task="plain", prompt_column="input.text",
                         answer_column="target.value", eval_fraction=0)
        data.check_columns(data.peek_columns(tmp_path / name), s, name)
        train, _, _ = data.prepare(s, tmp_path / "c")
        by_answer = {r["answer"]: r for r in train}
        assert by_answer["5"]["prompt"][-1] == {"role": "user", "content": "What is 2 plus 3?"}
        assert by_answer["5"]["input"] == {"text": "What is 2 plus 3?"}  # the column itself reaches the rewards
    s = DataSettings(task="plain", prompt_column="input.txt", answer_column="target.value")
    with pytest.raises(SettingsError, match=r"no value in column\(s\) \['input.txt'\] \('input' holds \['text'\]\)"):
        data.map_rows(rows, s, "f")
    with pytest.raises(SettingsError, match=r"lacks column\(s\) \['inputs.text'\]"):
        data.check_columns(["id", "input", "target"], DataSettings(task="plain", prompt_column="inputs.text",
                                                                    answer_column="target.value"), "f")


def test_references_with_a_decimal_comma_are_warned_of(caplog):
    """`57,00` from a `;` spreadsheet is the list {57, 0} to the checker: 57 and 57.00 scored 0 (trial)."""
    rows = [{"answer": a, "prompt": []} for a in ("57,00", "3,5", "1,234", "3, 5", "12")]
    with caplog.at_level("WARNING"):
        data.check_references(rows, DataSettings(task="plain"))
    assert "2 of 5 reference answers of the data look like decimals written with a comma (e.g. '57,00')" in caplog.text


def test_a_column_the_first_row_lacks_is_found_in_the_others():
    """A first row without `answer` made the whole file "lack column(s) ['answer']" (trial): that row is named."""
    s = DataSettings(task="plain")
    with pytest.raises(SettingsError, match=r'a row of f has no value in column\(s\) \[\'answer\'\]: \{"prompt": "a"\}'):
        data.map_rows([{"prompt": "a"}, {"prompt": "b", "answer": "1"}], s, "f")


@pytest.mark.parametrize("prompt", [
    [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "What is 2 plus 3?"}],  # ShareGPT
    [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
     {"role": "user", "content": [{"type": "text", "text": "What is 2 "}, {"type": "text", "text": "plus 3?"}]}],
    json.dumps([{"from": "system", "value": "Be brief."}, {"from": "human", "value": "What is 2 plus 3?"}]),  # a CSV cell
])
def test_sharegpt_turns_and_text_content_parts_are_conversational_prompts(prompt):
    """Both were refused as "not text nor a list of {role, content} messages" (trial)."""
    row = data.map_rows([{"conversation": prompt, "answer": "5"}], DataSettings(task="plain", prompt_column="conversation"),
                        "f")[0]
    assert row["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 plus 3?"}]


def test_an_image_content_part_is_refused():
    image = [{"role": "user", "content": [{"type": "image", "url": "a.png"}, {"type": "text", "text": "What is it?"}]}]
    with pytest.raises(SettingsError, match="not text nor a list of \\{role, content\\} messages"):
        data.map_rows([{"p": image, "answer": "cat"}], DataSettings(task="plain", prompt_column="p"), "f")
