"""The `json_schema` reward: structured extraction scored against a JSON Schema and a reference object.

The completion's JSON is read from its answer block when it has one, else from its last ```json block,
else from its last ```-fenced block of any tag, else from the whole text (from its first `{` or `[`). It must parse and validate against the
schema (the `json_schema` argument: JSON text, an object, or the path of a .json, .yaml or .yml file; else the
row's `schema` column, or the one `schema_column` names: JSON text or an object), checked
with the `jsonschema` library; otherwise it scores 0. A valid object then earns the share of the
reference object's fields (the answer column: JSON text, or a Python literal as a dict column arrives)
it matches: with `strict_types` a field matches when it is the same JSON value of the same type (`1`
is not `1.0` nor `"1"`, `true` is not `1`); without (the default) strings match case- and
whitespace-insensitively, numbers by value, and a string a number by value (`"42"` = `42` = `42.0`; two strings
compare as text: `"02139"` is not `"2139"`), inside lists and objects too.
A reference that is not an object (a list, a number) earns 1 on an equal value.
"""

from __future__ import annotations

import ast
import difflib
import functools
import json
import math
import os
from pathlib import Path
from typing import Annotated, Any

import pydantic

from grpo_job.rewards._extract import answer_or_fenced
from grpo_job.rewards.builtin import completion_text

_NOTHING = object()


def parse_json(text: str) -> Any:
    """The JSON value in `text` (answer block, fenced block, or the text from its first `{`/`[`); `_NOTHING`
    when there is none."""
    candidate = answer_or_fenced(text, ("json",))
    for source in ([candidate] if candidate is not None else []) + [text]:
        source = source.strip()
        try:
            return json.loads(source)
        except ValueError:
            pass
        starts = [i for i in (source.find("{"), source.find("[")) if i >= 0]
        if starts:
            try:
                return json.JSONDecoder().raw_decode(source[min(starts):])[0]
            except ValueError:
                pass
    return _NOTHING


def _load(value: Any, what: str) -> Any:
    """A column value that holds JSON: text parsed (JSON, else a Python literal), anything else as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"the {what} {value[:200]!r} is neither JSON nor a Python literal") from None


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    if not isinstance(schema, (dict, bool)):
        raise ValueError(f"a JSON Schema is an object, and this is {type(schema).__name__}: {schema_json[:200]}")
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ValueError(f"the JSON Schema is not valid ({e.message}, at {e.json_path}): {schema_json[:200]}") from None
    if misspelt := _misspelt_keyword(schema, sorted(cls.VALIDATORS), "$"):
        raise ValueError(f"the JSON Schema has {misspelt}: JSON Schema ignores keywords it does not know, so it would "
                         f"check nothing there: {schema_json[:200]}")
    return cls(schema)


# where JSON Schema (draft 2020-12 and draft 7) keeps subschemas: one schema, a list of them, or a name -> schema map
_ONE_SCHEMA = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
               "additionalItems", "unevaluatedItems", "unevaluatedProperties")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def _misspelt_keyword(schema: Any, keywords: list[str], at: str) -> str | None:
    """`'requird' at $ (did you mean 'required'?)` for the first key of `schema`, or of any subschema (under
    properties, items, allOf, not, $defs...), that is close to a keyword but none; None when none is (trial: a
    misspelt `required` and `properties` made every object valid)."""
    if not isinstance(schema, dict):
        return None
    for key in schema:
        close = difflib.get_close_matches(key, keywords, n=1, cutoff=0.75) if key not in keywords else []
        if close and key not in ("title", "description", "default", "examples", "definitions", "deprecated"):
            return f"{key!r} at {at} (did you mean {close[0]!r}?)"
    subschemas = [(f"{at}.{k}", schema[k]) for k in _ONE_SCHEMA if isinstance(schema.get(k), dict)]
    subschemas += [(f"{at}.{k}[{i}]", v) for k in _SCHEMA_LISTS if isinstance(schema.get(k), list)
                   for i, v in enumerate(schema[k])]
    subschemas += [(f"{at}.{k}.{name}", v) for k in _SCHEMA_MAPS if isinstance(schema.get(k), dict)
                   for name, v in schema[k].items()]
    return next((found for where, sub in subschemas if (found := _misspelt_keyword(sub, keywords, where))), None)


def schema_argument(value: Any) -> Any:
    """The `json_schema` argument as a schema object: an object as it is; text as JSON, else as the path of a
    JSON or YAML file (trial: users keep their schema in a file). Raises ValueError saying what it is not, or
    why the schema is no valid JSON Schema (checked against its own meta-schema)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text)
        except ValueError:
            path = Path(text.removeprefix("file://")).expanduser()
            if not path.is_file() and (path.suffix.lower() in (".json", ".yaml", ".yml") or "/" in text):
                raise ValueError(f"no schema file {text!r} (relative to the working directory {os.getcwd()})") from None
            if not path.is_file():
                raise ValueError(f"{text[:200]!r} is neither JSON nor the path of a file (working directory "
                                 f"{os.getcwd()}); give the schema as JSON or an object, or the path of a .json, .yaml "
                                 "or .yml file (a column of schemas is named by the schema_column argument)") from None
            value = _read_schema_file(path)
    _validator(json.dumps(value, sort_keys=True))
    return value


def _read_schema_file(path: Path) -> Any:
    import yaml

    text, kind = path.read_text(), "YAML" if path.suffix.lower() in (".yaml", ".yml") else "JSON"
    try:
        value = yaml.safe_load(text) if kind == "YAML" else json.loads(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"the schema file {str(path)!r} does not parse as {kind} ({' '.join(str(e).split())[:300]})") from None
    if not isinstance(value, (dict, bool)):
        raise ValueError(f"the schema file {str(path)!r} holds no JSON Schema object (it reads as "
                         f"{'nothing' if value is None else type(value).__name__})")
    return value


# the argument's type: `rewards.build` checks and converts it once, before any row or model is read
JsonSchemaArgument = Annotated[Any, pydantic.BeforeValidator(schema_argument)]


def unreadable_rows(rows: list[dict[str, Any]], json_schema: Any = None, schema_column: str = "schema",
                    **_: Any) -> list[tuple[int, str]]:
    """(row index, what is wrong) for every row whose schema (the `json_schema` argument, else the row's
    `schema_column`) is no valid JSON Schema, or whose reference answer is neither JSON nor a Python literal: the
    check of every row before any model is loaded (`rewards.calls.check_reward_rows`)."""
    bad = []
    for i, row in enumerate(rows):
        schema = json_schema if json_schema is not None else row.get(schema_column)
        try:
            if schema is None:
                raise ValueError(f"no JSON Schema: the row has no {schema_column!r} value (the reward's schema_column) "
                                 "and the reward no json_schema argument")
            _validator(json.dumps(_load(schema, "JSON Schema"), sort_keys=True))
            _load(row.get("answer"), "reference answer")
        except ValueError as e:
            bad.append((i, str(e)))
    return bad


def off_schema_references(rows: list[dict[str, Any]], json_schema: Any = None, schema_column: str = "schema",
                          **_: Any) -> list[tuple[int, str]]:
    """(row index, the first validation error) for every readable row whose reference answer does not validate
    against its own schema: no completion can earn the whole score there (the reference's fields fail the
    schema), which the dry call's few rows do not show (trial: `"priority": "urgent"` outside an enum)."""
    out = []
    for i, row in enumerate(rows):
        schema = json_schema if json_schema is not None else row.get(schema_column)
        try:
            validator = _validator(json.dumps(_load(schema, "JSON Schema"), sort_keys=True))
            reference = _load(row.get("answer"), "reference answer")
        except (ValueError, TypeError):  # unreadable: unreadable_rows names those
            continue
        error = next(iter(validator.iter_errors(reference)), None)
        if error is not None:
            out.append((i, f"the reference answer fails its JSON Schema ({error.message} at {error.json_path})"))
    return out


def _normal(value: Any) -> Any:
    if isinstance(value, bool):
        return ("bool", value)  # True == 1 in Python; a JSON boolean is never a number
    if value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = " ".join(value.split()).casefold()
        try:
            number = float(text.replace(",", ""))
            return number if math.isfinite(number) else text
        except ValueError:
            return text
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items()}
    return value


def _strict(value: Any) -> Any:
    # JSON values with their types: 1, 1.0 and True differ (Python's == says they are equal)
    if isinstance(value, list):
        return ("list", [_strict(v) for v in value])
    if isinstance(value, dict):
        return ("dict", {k: _strict(v) for k, v in value.items()})
    return (type(value).__name__, value)


def same(got: Any, want: Any, strict_types: bool) -> bool:
    return _strict(got) == _strict(want) if strict_types else _loose(got, want)


def _loose(got: Any, want: Any) -> bool:
    # two strings compare as text, so `"02139"` is not `"2139"` (trial: ZIP codes, ids); a string against a number
    # by value (`"42"` = `42`), through _normal
    if isinstance(got, str) and isinstance(want, str):
        return " ".join(got.split()).casefold() == " ".join(want.split()).casefold()
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(_loose(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(got, dict) and isinstance(want, dict):
        got, want = {str(k): v for k, v in got.items()}, {str(k): v for k, v in want.items()}
        return got.keys() == want.keys() and all(_loose(got[k], want[k]) for k in want)
    return _normal(got) == _normal(want)


def json_schema_reward(
    completions: list[Any], answer: list[Any] | None = None, json_schema: JsonSchemaArgument = None,
    strict_types: bool = False, schema_column: str = "schema", **kwargs: Any,
) -> list[float]:
    """Per completion: 0 when its JSON does not parse or fails the schema, else the share of the reference
    object's fields it matches (see the module docstring). `json_schema`: one schema for every row (else
    the `schema_column` column, `schema` by default); `strict_types`: compare values with their JSON types."""
    if isinstance(json_schema, str):  # called as it is, not built from settings (which convert it once)
        json_schema = schema_argument(json_schema)
    schemas = [json_schema] * len(completions) if json_schema is not None else kwargs.get(schema_column)
    if schemas is None:
        raise ValueError(f"the json_schema reward needs a JSON Schema: a {schema_column!r} column in the data (another "
                         "column: the reward's schema_column argument), or one schema for every row in its "
                         "json_schema argument (rewards.json_schema.json_schema)")
    if answer is None:
        raise ValueError("the json_schema reward compares with the reference object in the answer column, and the "
                         "rows have none")
    out = []
    for completion, schema, reference in zip(completions, schemas, answer, strict=True):
        validator = _validator(json.dumps(_load(schema, "JSON Schema"), sort_keys=True))
        want = _load(reference, "reference answer")
        got = parse_json(completion_text(completion))
        if got is _NOTHING or not validator.is_valid(got):
            out.append(0.0)
            continue
        if isinstance(want, dict) and want:
            if not isinstance(got, dict):
                out.append(0.0)
                continue
            hits = sum(key in got and same(got[key], value, strict_types) for key, value in want.items())
            out.append(hits / len(want))
        else:
            out.append(1.0 if same(got, want, strict_types) else 0.0)
    return out
