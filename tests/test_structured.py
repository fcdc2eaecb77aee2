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
