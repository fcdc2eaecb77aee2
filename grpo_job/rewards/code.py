"""The `code` reward: the model's program run against the row's tests in the sandbox (grpo_job.sandbox).

The program is the answer block when the completion has one (a fence inside it is removed), else the
last ```python (or ```py) block, else the last ```-fenced block of any tag; a completion with none of these
scores 0. When the answer block (or, without one, the completion) holds several ```python blocks, they are also
run joined in order, like a notebook's cells (blocks that are not Python on their own, such as sample output
tagged python or a block cut off at the length limit, left out), and the better of the two programs counts: a
function and then a block that calls it, or a failed first attempt and then a right one, both score. The
tests come from a dataset column (`tests` unless `tests_column` names another), whose value is one of:

- a string of Python test code (asserts), run after the program: 1 when it runs to its end, else 0; the
  test functions it defines are then called as pytest would (`def test_*()`, the `test*` methods of `Test*`
  classes, unittest's TestCase), and must pass too;
- a list of such strings: the fraction that pass;
- a list of `{"input": ..., "output": ...}` cases (APPS / Codeforces style; also APPS' `{"inputs": [...],
  "outputs": [...]}`): the program reads stdin, its stdout is compared whitespace-normalised; the
  fraction of cases passed.

HumanEval's form, test code that defines `check(candidate)` beside an `entry_point` column naming the function,
gets `check(<entry_point>)` appended, as HumanEval's harness does. A string that holds JSON (as Hub datasets
often store a list) is read as that JSON. A row whose tests
are None is skipped (None). With `all_or_nothing` a completion scores 1 only when every test passes.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Annotated, Any

import pydantic

from grpo_job import sandbox
from grpo_job.rewards._extract import answer_or_fenced, tagged_blocks
from grpo_job.rewards.builtin import completion_text, extract_answer

# fence tags that mark a Python program (an untagged block after it, e.g. sample output, is not the program)
PYTHON_TAGS = ("python", "py", "python3")

# what TRL passes besides the dataset columns (grpo_job.data.TRL_REWARD_ARGS; data imports no reward code)
_TRL_ARGS = {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}


def program_of(completion: Any) -> str | None:
    """The program in a completion, the first of `programs_of`; None when it has none."""
    return next(iter(programs_of(completion)), None)


def programs_of(completion: Any) -> list[str]:
    """The programs a completion is scored by, the best one counting: the ```python blocks of its answer block (or of
    the whole text when it has none) that are Python, joined in order as a notebook's cells are run (trial Y: a right
    function, then a block of usage that calls it, scored 0 on the usage alone), then the last block alone (trial Z:
    a first attempt whose own asserts fail, then a right second one); with one block or none, the answer block
    (unfenced), else the last ```python block, else the last fenced block. [] when it has none of these."""
    text = completion_text(completion)
    answer = extract_answer(text)
    single = answer_or_fenced(text, PYTHON_TAGS)
    out = [single] if single and single.strip() else []
    blocks = tagged_blocks(answer if answer is not None else text, PYTHON_TAGS)
    if len(blocks) > 1 and (runnable := [b for b in blocks if _is_python(b)]):
        joined = "\n\n".join(b.strip("\n") for b in runnable) + "\n"
        out = [joined] + [s for s in out if s.strip() != joined.strip()]
    return out


def _is_python(source: str) -> bool:
    try:
        compile(source, "<block>", "exec")
    except (SyntaxError, ValueError):  # ValueError: a NUL byte
        return False
    return True


def read_tests(value: Any) -> tuple[str, list[Any]] | None:
    """("asserts", [code, ...]) or ("io", [(stdin, expected), ...]) from a tests column value; None for None.
    Raises ValueError naming what the value is when it is neither form."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            value = json.loads(value)
        except ValueError:
            pass  # Python code that starts with a bracket: kept as code
    if isinstance(value, str):
        return "asserts", [value]
    if isinstance(value, dict) and isinstance(value.get("inputs"), list) and isinstance(value.get("outputs"), list):
        if len(value["inputs"]) != len(value["outputs"]):
            raise ValueError(f"APPS-style tests need one output per input; got {len(value['inputs'])} inputs and "
                             f"{len(value['outputs'])} outputs")
        value = [{"input": i, "output": o} for i, o in zip(value["inputs"], value["outputs"], strict=True)]
    if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        return "asserts", list(value)
    if isinstance(value, list) and value and all(isinstance(t, dict) and "input" in t and "output" in t for t in value):
        return "io", [(_text(t["input"]), _text(t["output"])) for t in value]
    raise ValueError(f"a tests value must be Python test code (a string), a list of such strings, a list of "
                     f'{{"input", "output"}} cases, or APPS\' {{"inputs": [...], "outputs": [...]}}; got '
                     f"{_shape(value)}: {str(value)[:200]}")


def _shape(value: Any) -> str:
    """What a tests value that fits no form is, by its keys (trial: `{"stdin", "stdout"}` cases were "a list")."""
    if isinstance(value, dict):
        return f"an object with keys {sorted(map(str, value))}"
    if isinstance(value, list) and value:
        odd = next((t for t in value if not (isinstance(t, dict) and "input" in t and "output" in t)), None)
        if isinstance(odd, dict):
            return f"a list whose case has keys {sorted(map(str, odd))}, not 'input' and 'output'"
        if isinstance(odd, list):
            return "a list of lists (a case is an object with 'input' and 'output')"
        return f"a list with an item of type {type(odd).__name__} among its cases"
    return "an empty list" if value == [] else type(value).__name__


def humaneval_call(code: str, entry_point: str) -> str:
    """HumanEval's harness for a row with an `entry_point` column: test code that defines `check(candidate)` and
    never calls it gets `check(<entry_point>)` appended, as HumanEval's own evaluation does. Without it every
    program passed, an empty one too (trial)."""
    defines = re.search(r"^def check\(", code, re.MULTILINE)
    calls = re.search(r"^check\(", code, re.MULTILINE)
    return f"{code}\n\ncheck({entry_point})\n" if defines and not calls and entry_point.isidentifier() else code


def row_tests(value: Any, entry_point: Any = None) -> tuple[str, list[Any]] | None:
    """`read_tests(value)`, with HumanEval's call appended to its test code when the row names an `entry_point`:
    the tests as the reward runs them."""
    tests = read_tests(value)
    if tests is not None and tests[0] == "asserts" and entry_point:
        return "asserts", [humaneval_call(code, str(entry_point)) for code in tests[1]]
    return tests


def first_error(completion: str, row: dict[str, Any], tests_column: str = "tests", seconds_per_case: float = 5.0,
                memory_mb: int = 512, **_: Any) -> str | None:
    """The first error line (`test 0: ModuleNotFoundError: ...`) of `completion`'s program against `row`'s asserts, as
    the reward runs them; None for stdin/stdout tests, no program, or no error. For check's note on a reference that
    scores 0 (trial: `import pytest` in the tests, which the sandbox's standard library lacks, was said as a 0)."""
    tests, program = row_tests(row.get(tests_column), row.get("entry_point")), program_of(completion)
    if tests is None or tests[0] != "asserts" or program is None:
        return None
    result = sandbox.run_asserts(sandbox.Program(program), tests[1], sandbox.Limits(seconds=seconds_per_case,
                                                                                    memory_mb=memory_mb))
    return next((line for line in result.stderr.splitlines() if line.strip()), None)


def unreadable_rows(rows: list[dict[str, Any]], tests_column: str = "tests", **_: Any) -> list[tuple[int, str]]:
    """(row index, what is wrong) for every row whose tests value `read_tests` cannot read, or whose test code does
    not compile: the check of every row before any model is loaded (`rewards.calls.check_reward_rows`); the reward itself would raise on it at
    the first training batch that holds the row."""
    bad = []
    for i, row in enumerate(rows):
        if tests_column not in row:
            bad.append((i, f"no column {tests_column!r} (the reward's tests_column)"))
            continue
        try:
            tests = read_tests(row[tests_column])
            if tests is not None and tests[0] == "asserts":
                for code in tests[1]:  # test code that is no Python fails every program, the right one too
                    compile(code, "<tests>", "exec")
        except SyntaxError as e:
            bad.append((i, f"column {tests_column!r}: the test code is not valid Python ({e.msg}, line {e.lineno})"))
        except ValueError as e:
            bad.append((i, f"column {tests_column!r}: {e}"))
    return bad


def _text(value: Any) -> str:
    if isinstance(value, list):  # some datasets keep input lines as a list
        return "\n".join(map(str, value)) + "\n"
    return value if isinstance(value, str) else json.dumps(value)


def code_reward(
    completions: list[Any], tests_column: str = "tests", all_or_nothing: bool = False,
    seconds_per_case: Annotated[float, pydantic.Field(gt=0)] = 5.0,
    memory_mb: Annotated[int, pydantic.Field(ge=32)] = 512, **kwargs: Any,
) -> list[float | None]:
    """Fraction of the row's tests the completion's program passes (see the module docstring), computed in
    the sandbox, all completions at once over the CPU cores. `tests_column`: the dataset column holding the
    tests; `all_or_nothing`: 1 only when every test passes; `seconds_per_case`: time limit of one test
    (CPU and wall), > 0; `memory_mb`: address-space limit of the program, at least 32 (the interpreter's
    own start needs about that)."""
    if tests_column not in kwargs:
        raise ValueError(f"the code reward reads the tests from column {tests_column!r}, which the rows lack (they "
                         f"have {sorted(k for k in kwargs if k not in _TRL_ARGS)}); add it "
                         "to the data or name the column in the reward's tests_column argument")
    limits = sandbox.Limits(seconds=seconds_per_case, memory_mb=memory_mb)
    calls: list[Any] = []
    owners: list[int] = []  # completion index of each call
    out: list[float | None] = [0.0] * len(completions)
    spec: list[tuple[str, int] | None] = []
    entry_points = kwargs.get("entry_point") or [None] * len(completions)
    for i, (completion, value) in enumerate(zip(completions, kwargs[tests_column], strict=True)):
        tests = row_tests(value, entry_points[i])
        if tests is None:
            out[i] = None
            spec.append(None)
            continue
        kind, cases = tests
        spec.append((kind, len(cases)))
        for k, source in enumerate(programs_of(completion)):
            program = sandbox.Program(source)
            if kind == "asserts":
                calls.append(functools.partial(sandbox.run_asserts, program, cases, limits))
                owners.append((i, k))
            else:
                for stdin, expected in cases:
                    calls.append(functools.partial(sandbox.run_io, program, stdin, expected, limits))
                    owners.append((i, k))
    passed: dict[tuple[int, int], list[bool]] = {}
    for owner, result in zip(owners, sandbox.run_batch(calls), strict=True):
        passed.setdefault(owner, []).extend(result.passed)
    for (i, _), got in passed.items():
        total = spec[i][1]
        score = float(sum(got) == total) if all_or_nothing else sum(got) / total
        out[i] = max(out[i] or 0.0, score)  # the best of the completion's programs
    return out
