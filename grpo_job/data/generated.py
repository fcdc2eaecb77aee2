"""The built-in datasets (`data.path: builtin:<name>`), generated offline and small enough for a CPU run:

- `arithmetic`: word problems with GSM8K's `#### <answer>` solutions; `addition`: "What is a + b?" after one
  worked example in the reasoning/answer format;
- `coding`: "Write a Python function f(xs) that returns ..." after one worked example; `answer` is a reference
  solution, `tests` a list of three assert strings (the code reward scores the fraction that pass);
- `extraction`: a sentence about a person, to be turned into a JSON object; `answer` is the reference object
  and `schema` its JSON Schema, both as JSON text (one Arrow type for every row).

Train and test splits use different seeds, so they do not overlap by construction.
"""


from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]

# (what f returns, reference body, the function itself): one-liners a 135M model sometimes writes
_FUNCTIONS: list[tuple[str, str, Callable[[list[int]], Any]]] = [
    ("the sum of the numbers in the list xs", "return sum(xs)", sum),
    ("the largest number in the list xs", "return max(xs)", max),
    ("the smallest number in the list xs", "return min(xs)", min),
    ("the list xs in reverse order", "return xs[::-1]", lambda xs: xs[::-1]),
    ("the first item of the list xs", "return xs[0]", lambda xs: xs[0]),
    ("the last item of the list xs", "return xs[-1]", lambda xs: xs[-1]),
    ("the list xs sorted from smallest to largest", "return sorted(xs)", sorted),
    ("a list with every number of xs doubled", "return [x * 2 for x in xs]", lambda xs: [x * 2 for x in xs]),
    ("how many numbers in the list xs are even", "return sum(1 for x in xs if x % 2 == 0)",
     lambda xs: sum(1 for x in xs if x % 2 == 0)),
    ("the sum of the squares of the numbers in the list xs", "return sum(x * x for x in xs)",
     lambda xs: sum(x * x for x in xs)),
]

_CODING_EXAMPLE = ("Example:\nWrite a Python function f(xs) that returns the number of items in the list xs.\n"
                   "<reasoning>\nlen gives the number of items.\n</reasoning>\n<answer>\ndef f(xs):\n"
                   "    return len(xs)\n</answer>\n\n")


def generate_coding(n: int, seed: int) -> list[Row]:
    """`f(xs)` one-liners with three assert tests each, after one worked example."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        about, body, func = rng.choice(_FUNCTIONS)
        tests = []
        for _ in range(3):
            xs = [rng.randint(-9, 20) for _ in range(rng.randint(1, 6))]
            tests.append(f"assert f({xs!r}) == {func(list(xs))!r}")
        rows.append({"prompt": f"{_CODING_EXAMPLE}Now you: Write a Python function f(xs) that returns {about}.",
                     "answer": f"def f(xs):\n    {body}\n", "tests": tests})
    return rows


_PEOPLE = ["Ava", "Ben", "Chloe", "Dev", "Elif", "Femi", "Gita", "Hugo", "Iris", "Jun"]
_CITIES = ["Lisbon", "Oslo", "Lagos", "Lima", "Pune", "Kyoto", "Quito", "Riga", "Tunis", "Perth"]
_JOBS = ["nurse", "baker", "pilot", "teacher", "chemist", "farmer"]
_SENTENCES = [
    "{name} is {age} years old, lives in {city} and works as a {job}.",
    "Born {age} years ago, {name} now works as a {job} in {city}.",
    "In {city}, the {job} {name} turned {age} this year.",
]
EXTRACTION_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "city": {"type": "string"},
                   "job": {"type": "string"}},
    "required": ["name", "age", "city", "job"],
    "additionalProperties": False,
}
_EXTRACTION_ASK = "Give a JSON object with the keys name, age, city and job for this text:\n"
_EXTRACTION_EXAMPLE = (f"Example:\n{_EXTRACTION_ASK}Omar is 51 years old, lives in Cairo and works as a judge.\n"
                       '<reasoning>\nThe text names Omar, 51, Cairo, judge.\n</reasoning>\n<answer>\n'
                       '{"name": "Omar", "age": 51, "city": "Cairo", "job": "judge"}\n</answer>\n\n')


def generate_extraction(n: int, seed: int) -> list[Row]:
    """A sentence about a person -> {name, age, city, job}, after one worked example."""
    rng = random.Random(seed)
    schema = json.dumps(EXTRACTION_SCHEMA)
    rows = []
    for _ in range(n):
        fields = {"name": rng.choice(_PEOPLE), "age": rng.randint(18, 80), "city": rng.choice(_CITIES),
                  "job": rng.choice(_JOBS)}
        text = rng.choice(_SENTENCES).format(**fields)
        rows.append({"prompt": f"{_EXTRACTION_EXAMPLE}Now you: {_EXTRACTION_ASK}{text}", "answer": json.dumps(fields),
                     "schema": schema})
    return rows


_NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elif", "Femi", "Gita", "Hugo", "Iris", "Jun"]


def _arithmetic_problem(rng: random.Random) -> Row:
    name, kind = rng.choice(_NAMES), rng.randrange(4)
    a, b, c = rng.randint(2, 40), rng.randint(2, 12), rng.randint(1, 9)
    if kind == 0:
        q = f"{name} has {a} marbles, wins {b} more and then gives away {c}. How many marbles does {name} have now?"
        steps, ans = f"{a} + {b} = {a + b}. {a + b} - {c} = {a + b - c}.", a + b - c
    elif kind == 1:
        q = f"A box holds {b} pencils. How many pencils are in {c} boxes and {a} loose pencils?"
        steps, ans = f"{b} * {c} = {b * c}. {b * c} + {a} = {b * c + a}.", b * c + a
    elif kind == 2:
        q = f"{name} reads {b} pages a day for {c} days. The book has {b * c + a} pages. How many pages are left?"
        steps, ans = f"{b} * {c} = {b * c}. {b * c + a} - {b * c} = {a}.", a
    else:
        q = f"Tickets cost ${b} each. {name} buys {c} tickets and pays with ${b * c + a}. How much change is due?"
        steps, ans = f"{b} * {c} = {b * c}. {b * c + a} - {b * c} = {a}.", a
    return {"question": q, "answer": f"{steps}\n#### {ans}"}


def generate_arithmetic(n: int, seed: int) -> list[Row]:
    """Small GSM8K-shaped word problems (question, answer with `#### N`), reproducible from the seed."""
    rng = random.Random(seed)
    return [_arithmetic_problem(rng) for _ in range(n)]


# One worked example in the format the rewards check: SmolLM2-135M-Instruct never writes the tags
# from the system prompt alone (every reward 0), but copies them from an example in some samples.
_ADDITION_EXAMPLE = "Example:\nWhat is 3 + 4?\n<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>\n\n"


def generate_addition(n: int, seed: int) -> list[Row]:
    """`What is a + b?` (a, b in 2..20) after one worked example in the reward's format: a task on which
    a 135M model earns non-zero, varying reward within ~48 tokens (the CPU smoke run's learning signal)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        rows.append({"question": f"{_ADDITION_EXAMPLE}Now you: What is {a} + {b}?", "answer": f"{a} + {b} = {a + b}\n#### {a + b}"})
    return rows


BUILTIN_DATASETS: dict[str, Callable[[str], list[Row]]] = {
    # split -> rows; train and test use different seeds so they do not overlap by construction
    "arithmetic": lambda split: generate_arithmetic(256 if split == "train" else 64, 0 if split == "train" else 1),
    "addition": lambda split: generate_addition(256 if split == "train" else 64, 0 if split == "train" else 1),
    "coding": lambda split: generate_coding(256 if split == "train" else 64, 0 if split == "train" else 1),
    "extraction": lambda split: generate_extraction(256 if split == "train" else 64, 0 if split == "train" else 1),
}
