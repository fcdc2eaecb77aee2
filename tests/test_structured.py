"""The `json_schema` reward: where the JSON is found, schema validation with `jsonschema`, field-by-field credit,
type-strict and normalised comparison, and clear errors for a missing or invalid schema."""

import json

import pytest

from grpo_job import rewards
from grpo_job.data import generated as generated_tasks

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "city": {"type": "string"}, "tags": {"type": "array"}},
          "required": ["name", "age"], "additionalProperties": False}
REF = {"name": "Ava", "age": 34, "city": "Lisbon", "tags": ["a", "b"]}


@pytest.mark.parametrize("completion, strict, want", [
    ('{"name": "Ava", "age": 34, "city": "Lisbon", "tags": ["a", "b"]}', False, 1.0),  # the whole text
    # the last ```json block, not an untagged block after it
    ('```json\n{"name": "Ava", "age": 34}\n```\nas a table:\n```\nname | age\n```', False, 0.5),
    ('<reasoning>r</reasoning><answer>{"name": "Ava", "age": 34}</answer>', False, 0.5),  # answer block, 2 of 4
    ('Sure:\n```json\n{"name": "ava ", "age": 34, "city": "LISBON", "tags": ["A", "b"]}\n```', False, 1.0),  # normalised
    ('```json\n{"name": "ava ", "age": 34, "city": "LISBON", "tags": ["A", "b"]}\n```', True, 0.25),  # strict: age only
    ('The object is {"name": "Ava", "age": 34, "city": "Oslo"} as asked.', False, 0.5),  # JSON inside prose
    ('{"name": "Ava", "age": "34"}', False, 0.0),  # schema: age must be an integer
    ('{"name": "Ava", "age": 34, "extra": 1}', False, 0.0),  # schema: no other keys
    ('{"age": 34}', False, 0.0),  # schema: name is required
    ('{"name": "Ava", "age": 34,', False, 0.0),  # invalid JSON
    ("no JSON here", False, 0.0),
    ('["Ava", 34]', False, 0.0),  # not an object
    ('{"name": "Ava", "age": 34.0}', False, 0.5),  # JSON Schema: 34.0 is an integer (a zero fraction)
    ('{"name": "Ava", "age": 34.0}', True, 0.25),  # but not the reference's type
])
def test_table(completion, strict, want):
    got = rewards.json_schema_reward([completion], answer=[json.dumps(REF)], schema=[json.dumps(SCHEMA)],
                                     strict_types=strict)
    assert got == [pytest.approx(want)]


def test_type_strict_tells_numbers_and_bools_apart():
    schema = {"type": "object"}
    ref = json.dumps({"n": 1, "ok": True, "s": "1"})
    loose = rewards.json_schema_reward(['{"n": 1.0, "ok": true, "s": 1}'], answer=[ref], json_schema=schema)
    strict = rewards.json_schema_reward(['{"n": 1.0, "ok": true, "s": 1}'], answer=[ref], json_schema=schema,
                                        strict_types=True)
    assert loose == [1.0] and strict == [pytest.approx(1 / 3)]
    assert rewards.json_schema_reward(['{"ok": 1}'], answer=['{"ok": true}'], json_schema=schema) == [0.0]


def test_schema_argument_wins_and_reference_may_be_a_python_literal():
    # a dict column reaches the rewards as str(dict) after data preparation: read as a Python literal
    got = rewards.json_schema_reward(['{"a": 1}', '{"a": 2}'], answer=[str({"a": 1})] * 2,
                                     json_schema=json.dumps({"type": "object", "required": ["a"]}),
                                     schema=["not used"] * 2)
    assert got == [1.0, 0.0]


def test_non_object_reference_scores_equality():
    schema = {"type": "array", "items": {"type": "integer"}}
    assert rewards.json_schema_reward(["[1, 2]", "[2, 1]"], answer=["[1, 2]"] * 2, json_schema=schema) == [1.0, 0.0]


def test_conversational_completions():
    msgs = [[{"role": "assistant", "content": '{"name": "Ava", "age": 34}'}]]
    assert rewards.json_schema_reward(msgs, answer=[json.dumps(REF)], json_schema=SCHEMA) == [0.5]


def test_missing_or_broken_schema_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a JSON Schema"):
        rewards.json_schema_reward(["{}"], answer=["{}"])
    with pytest.raises(ValueError, match="JSON Schema is not valid"):
        rewards.json_schema_reward(["{}"], answer=["{}"], json_schema={"type": "no-such-type"})
    with pytest.raises(ValueError, match="neither JSON nor a Python literal"):
        rewards.json_schema_reward(["{}"], answer=["{oops"], json_schema={"type": "object"})


def test_built_by_name_and_the_generated_task_is_solved_by_its_references():
    reward = rewards.build("json_schema", {"strict_types": "true"})
    rows = generated_tasks.generate_extraction(10, seed=2)
    refs = [f"<reasoning>x</reasoning><answer>{r['answer']}</answer>" for r in rows]
    assert reward(refs, answer=[r["answer"] for r in rows], schema=[r["schema"] for r in rows]) == [1.0] * 10
    wrong = [json.dumps({**json.loads(r["answer"]), "age": 0}) for r in rows]
    assert reward(wrong, answer=[r["answer"] for r in rows], schema=[r["schema"] for r in rows]) == [0.75] * 10


def test_the_schema_column_may_have_another_name():
    """With the column named `spec`, the message said "point the reward at the right column" and there was no
    argument to do so: `{json_schema: spec}` was read as a schema (recipe trial)."""
    from grpo_job import rewards
    from grpo_job.rewards import calls
    from grpo_job.rewards.structured import unreadable_rows

    spec = '{"type": "object", "required": ["name"]}'
    reward = rewards.build("json_schema", {"schema_column": "spec"})
    assert reward(['{"name": "Ava"}', '{"age": 3}'], answer=['{"name": "Ava"}'] * 2, spec=[spec] * 2) == [1.0, 0.0]
    rows = [{"prompt": "p", "answer": '{"name": "Ava"}', "spec": spec}]
    assert unreadable_rows(rows, schema_column="spec") == []
    assert "no 'schema' value" in unreadable_rows(rows)[0][1]
    calls.check_reward_rows({"json_schema": reward}, rows)


def test_the_schema_argument_may_be_a_file_and_is_checked_once_when_built(tmp_path, monkeypatch):
    """Users keep their schema in a file; a path, a missing file and an invalid schema each got "reads column
    'schema', which no row of the data has" (trial: the argument was read only row by row)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "s.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "s.yaml").write_text("type: object\nrequired: [name, age]\n")
    answer = [json.dumps(REF)]
    for path in ("s.json", str(tmp_path / "s.json"), "./s.yaml"):
        reward = rewards.build("json_schema", {"json_schema": path})
        assert reward(['{"name": "Ava", "age": 34}'], answer=answer) == [0.5], path
    assert rewards.json_schema_reward(['{"name": "Ava"}'], answer=answer, json_schema="s.yaml") == [0.0]  # no age
    for value, said in [
        ("./schemas/nope.json", f"no schema file './schemas/nope.json' (relative to the working directory {tmp_path})"),
        ("empty.yaml", "the schema file 'empty.yaml' holds no JSON Schema object (it reads as nothing)"),  # trial
        ("[1]", "a JSON Schema is an object, and this is list"),
        # JSON Schema ignores a keyword it does not know: a misspelt one checked nothing (trial)
        ({"type": "object", "requird": ["a"]}, "'requird' at $ (did you mean 'required'?)"),
        ({"type": "object", "properties": {"a": {"tpye": "string"}}}, "'tpye' at $.properties.a (did you mean 'type'?)"),
        # ... wherever JSON Schema keeps subschemas (trial: a typo under anyOf went unseen)
        ({"anyOf": [{"type": "object"}, {"type": "array", "minItem": 1}]}, "'minItem' at $.anyOf[1] (did you mean 'minItems'?)"),
        ({"type": "object", "additionalProperties": {"tpye": "number"}}, "'tpye' at $.additionalProperties"),
        ({"type": "array", "prefixItems": [{"enmu": [1]}]}, "'enmu' at $.prefixItems[0] (did you mean 'enum'?)"),
        ({"not": {"requird": ["a"]}}, "'requird' at $.not"),
        ({"$defs": {"p": {"patternProperties": {"^x": {"maxLenght": 3}}}}}, "'maxLenght' at $.$defs.p.patternProperties.^x"),
        ("spec", "a column of schemas is named by the schema_column argument"),
        ({"type": "obejct"}, "the JSON Schema is not valid ('obejct' is not valid under any of the given schemas, at $.type)"),
        ('{"required": "name"}', "at $.required"),
    ]:
        with pytest.raises(TypeError) as e:
            rewards.build("json_schema", {"json_schema": value})
        assert "reward 'json_schema': argument json_schema: " in str(e.value) and said in str(e.value), str(e.value)
        assert str(e.value).endswith("set rewards.json_schema.json_schema")
    (tmp_path / "bad.yaml").write_text("type: [object\n")
    with pytest.raises(TypeError, match=r"the schema file '.*bad.yaml' does not parse as YAML"):
        rewards.build("json_schema", {"json_schema": "bad.yaml"})


def test_with_one_schema_for_every_row_no_column_is_asked_for():
    """References the reward cannot read, with the schema given as the argument: the message blamed the `schema`
    column the run never uses (trial)."""
    from grpo_job.errors import SettingsError
    from grpo_job.rewards import calls

    reward = rewards.build("json_schema", {"json_schema": SCHEMA})
    rows = [{"prompt": f"p{i}", "answer": "{oops"} for i in range(3)]
    with pytest.raises(SettingsError) as e:
        calls.check_reward_rows({"json_schema": reward}, rows)
    assert "cannot read 3 of 3 rows" in str(e.value) and "neither JSON nor a Python literal" in str(e.value)
    assert "schema_column" not in str(e.value)


@pytest.mark.parametrize("reference, said", [
    ({"name": "Ava", "age": 34}, None),
    ({"name": "Ava", "age": "34"}, "'34' is not of type 'integer' at $.age"),
    ({"name": "Ava"}, "'age' is a required property at $"),
    ({"name": "Ava", "age": 3, "nick": "A"}, "Additional properties are not allowed ('nick' was unexpected) at $"),
], ids=["valid", "wrong-type", "missing", "extra"])
def test_references_that_fail_their_schema_are_warned_of(reference, said, caplog):
    """A reference outside its own schema can never be earned in full; the dry call's three rows missed 2 such
    rows of 40 (trial)."""
    from grpo_job.rewards import calls
    from grpo_job.rewards.structured import off_schema_references

    rows = [{"prompt": "ok", "answer": json.dumps(REF), "schema": json.dumps(SCHEMA)},
            {"prompt": "this one", "answer": json.dumps(reference), "schema": json.dumps(SCHEMA)}]
    found = off_schema_references(rows)
    assert found == ([] if said is None else [(1, f"the reference answer fails its JSON Schema ({said})")])
    with caplog.at_level("WARNING"):
        calls.check_reward_rows({"json_schema": rewards.build("json_schema")}, rows)
    warned = [r.getMessage() for r in caplog.records if "whole score" in r.getMessage()]
    if said is None:
        assert warned == []
    else:
        assert len(warned) == 1 and "on 1 of 2 rows of the data" in warned[0] and said in warned[0]
        assert 'in row {"answer": ' + json.dumps(json.dumps(reference))[:40] in warned[0]  # the row, to find it


def test_a_schema_no_reference_passes_is_an_error_before_training():
    """Trial X: a schema typing `age` as a string against integer references: `check` warned of 30 rows of 30 and
    exited 0; training would have taught the schema against every reference."""
    from grpo_job.errors import SettingsError
    from grpo_job.rewards import calls

    schema = {**SCHEMA, "properties": {**SCHEMA["properties"], "age": {"type": "string"}}}
    rows = [{"prompt": f"p{i}", "answer": json.dumps({"name": "Ava", "age": 30 + i})} for i in range(3)]
    reward = rewards.build("json_schema", {"json_schema": schema})
    with pytest.raises(SettingsError) as e:
        calls.check_reward_rows({"json_schema": reward}, rows)
    assert ("reward 'json_schema': on every one of the 3 rows of the data no completion can earn the whole score: e.g. "
            "the reference answer fails its JSON Schema (30 is not of type 'string' at $.age)") in str(e.value)
    assert "fix the schema or the answer column" in str(e.value)
    calls.check_reward_rows({"json_schema": rewards.build("json_schema", {"json_schema": SCHEMA})}, rows)  # passes


@pytest.mark.parametrize("got, want, same", [
    ('{"zip": "2139"}', {"zip": "02139"}, False),  # two strings: text (trial: ZIP codes matched by value)
    ('{"zip": 2139}', {"zip": "2139"}, True),  # a number against a string: by value
    ('{"id": "1,000"}', {"id": "1000"}, False),
    ('{"name": " ava  lovelace"}', {"name": "Ava Lovelace"}, True),  # case and whitespace
    ('{"tags": ["A", "b"]}', {"tags": ["a", "B"]}, True),
    ('{"n": 42.0}', {"n": 42}, True),
    ('{"ok": 1}', {"ok": True}, False),  # a boolean is no number
], ids=["zip", "number-vs-string", "thousands", "case", "list", "float-int", "bool"])
def test_loose_comparison_of_fields(got, want, same):
    schema = {"type": "object"}
    assert rewards.json_schema_reward([got], answer=[json.dumps(want)], json_schema=schema) == [1.0 if same else 0.0]
