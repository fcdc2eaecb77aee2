"""The one answer checker: is a model's answer equal to the reference answer?

Used by the correctness reward, the evaluation stages and the reference-answer check of the data
stage, so the training signal and the before/after accuracy agree by construction.

Math answers go through `math-verify` (the verifier of TRL's `accuracy_reward` and open-r1):
LaTeX (`\\frac{7}{2}`, `\\boxed{18}`, `2^{10}`), fractions, percentages, units, thousands separators,
with sympy deciding equality. Before it, a number-only fast path compares plain numbers exactly as
fractions (`72`, `72.0`, `$1,000`, `-3`, `1.5e3`, `12 apples`, `12 (3 x 4)`) where math-verify
alone would round to 6 places or read `1.5e3` as 1.5; a scale word multiplies (`1.5 million`); a
list of plain numbers (`1,2,3`, `3 or 4`) is a set, never equal to one number (a hedged answer earns
nothing). Free text with several numbers counts only as arithmetic or a worked line ending in
`= result` that holds (`40 + 1 = 42` answers nothing); words that deny, bound or change the number
(`not 42`, `42 is wrong`, `at least 42`, `5 squared`, `2 and a half`) make it no answer, and a
remark in parentheses may show working (`12 (3 x 4)`) but not another number (`12 (13)`): math-verify's free-text reading would keep one
number of `5:31`, `2024-01-06` or `between 40 and 42`. A reference printed as a long float
(`0.3333333333333333`) equals what rounds to it at its precision. A bare pair, tuple,
interval or list (`(1, 2)`, `[0,1]`) is read as LaTeX, so its structure counts and its spacing does
not; bare algebra (`x+1`) is read as LaTeX too. Non-math answers (`yes`, `Paris`) are compared as
strings with case, whitespace, LaTeX wrapping (`\\text{}`, `$...$`, `\\boxed{}`), quotes, Markdown
emphasis and final punctuation normalised. A single capital letter reference (`B`, `(B)`) is a
multiple-choice label: `(B)`, `B)`, `B.`, `\\boxed{B}`, `Answer: B` and `(B) 12` give it, and a
second label or a denial after it (`(B) or (C)`, `(B) is wrong`) takes it back.

math-verify can be slow on adversarial input. On the main thread (where TRL calls synchronous
rewards and the evaluation runs) its own signal-based timeout applies. Off the main thread (an
async reward on TRL's event-loop thread) signals cannot be used and a thread cannot be stopped
(sympy's big-integer powers hold the GIL), so the math-verify calls go to one spawned worker
process, killed when it does not answer in time. Either way a timeout scores False and never hangs
a training step.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import re
import sys
import threading
import types
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Literal

from grpo_job.errors import JobError

log = logging.getLogger(__name__)

AnswerType = Literal["auto", "math", "exact"]
ANSWER_TYPES = ("auto", "math", "exact")

TIMEOUT_SECONDS = 2
"""Limit for one math-verify parse or comparison (whole seconds: math-verify uses `signal.alarm`)."""

MAX_CHARS = 2000
"""Answers longer than this are not parsed as math (no model answer to a word problem is that long)."""

# A plain number: sign, thousands groups or digits, decimals, a bounded exponent (1e400 is still a
# number, 1e99999 would build a huge integer).
_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:[eE][-+]?\d{1,3})?|[-+]?\.\d+(?:[eE][-+]?\d{1,3})?"
_CURRENCY = r"(?:[$€£¥₹]|\\\$|usd\b|eur\b|rs\.?)"
# One number, optionally with a currency sign before it and unit words or a parenthesised remark
# after it: `$72`, `-$5`, `72 apples`, `72 km/h`, `12 (3 x 4)`.
_PLAIN = re.compile(
    rf"^(?P<sign>[-+])?\s*{_CURRENCY}?\s*(?P<num>{_NUM})\s*(?:\((?P<remark>[^()]*)\))?\s*(?P<unit>[^\W\d_][^\d()=+*^\\]*)?$",
    re.IGNORECASE,
)
# A unit word that is a multiplier: `1.5 million` is 1500000, not 1.5 (nor 1.5 billion).
_SCALES = {"dozen": 12, "hundred": 10**2, "thousand": 10**3, "million": 10**6, "billion": 10**9,
           "trillion": 10**12}
# A parenthesised remark after a number may show the working (`12 (3 x 4)`), not another number
# (`12 (13)`, `12 (actually 13)`).
_OPERATOR = re.compile(r"[+\-*/×÷x=]")
# Two or more plain numbers joined by commas, semicolons, `or`, `and`: a set of candidates.
_LIST_ITEM = rf"{_CURRENCY}?\s*(?:{_NUM})"
_LIST = re.compile(rf"^{_LIST_ITEM}(?:\s*(?:,|;|\bor\b|\band\b)\s*{_LIST_ITEM})+$", re.IGNORECASE)
_LATEX_DELIMS = ("$", "\\(", "\\[")
_WORD = re.compile(r"[^\W\d_]{3,}")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
# A pair, tuple, interval or list written bare, `(1, 2)`: math-verify's LaTeX reading gets its structure,
# its plain-expression reading would take the last number alone (`(1, 2)` would equal `2`).
_BRACKETED = re.compile(r"^[(\[].*[)\]]$", re.DOTALL)
# What wraps a word answer without being part of it: `$...$`, `\(...\)`, `\[...\]`, `\boxed{...}`.
_EMPHASIS = re.compile(r"^(?:\*\*(.+)\*\*|__(.+)__|\*(.+)\*|_(.+)_|\"(.+)\"|'(.+)'|“(.+)”|`(.+)`)$", re.DOTALL)
_END_PUNCTUATION = ".!?,;:"
_WRAPPED = re.compile(r"^(?:\$\$?([^$]+)\$\$?|\\\((.+)\\\)|\\\[(.+)\\\]|\\boxed\{(.+)\})$", re.DOTALL)
# Free text (no LaTeX) with several numbers is math only as arithmetic (`3/4`, `2*3+1`) or a worked line
# ending in `= result`; otherwise math-verify's free-text reading keeps one number and drops the rest
# (`5:31` would equal 5, `between 40 and 42` 42, `2024-01-06` 2024).
_NUMBERS = re.compile(_NUM)
_ARITHMETIC = re.compile(r"[\d\s.,+\-*/×÷()%]+")
_OPERATION = re.compile(r"[\d)]\s*[+\-*/×÷]\s*[\d(]")
_SPACED_THOUSANDS = re.compile(r"\d{1,3}(?: \d{3})+(?:\.\d+)?")  # `1 000 000`
_LEADING_ZERO = re.compile(r"(?:^|[-/:])\s*0\d")  # `2024-01-06`: a date, not a subtraction
# Bare algebra in single-letter variables (`x+1`, `y = 2x + 1`): read as LaTeX, where it parses.
_ALGEBRA = re.compile(r"(?=.*[A-Za-z])(?=.*[+\-*/=<>≤≥])[A-Za-z\d\s.,+\-*/=<>≤≥()]+")
_LONG_NAME = re.compile(r"[A-Za-z]{2,}")
# Words that deny, bound or change the number next to them (`not 42`, `42 is wrong`, `at least 42`,
# `5 squared`, `2 and a half`): free text holding one is not that number.
_QUALIFIER = re.compile(r"(?<!\\)\b(?:not|no|never|neither|nor|wrong|incorrect|false|except|excluding|least|most|more|"
                        r"less|fewer|over|under|above|below|almost|nearly|negative|squared|cubed|halfs?|halves|"
                        r"quarters?|thirds?|from)\b|n't\b", re.IGNORECASE)
# After a choice label, words that take it back (`(C) is wrong`); option text may bound numbers freely.
_DENIAL = re.compile(r"\b(?:not|no|never|wrong|incorrect|false)\b|n't\b", re.IGNORECASE)
# The math inside prose (`$42$ is wrong`): what is left is checked for qualifiers.
_MATH_SPANS = re.compile(r"\$\$?[^$]*\$\$?|\\boxed\{[^{}]*\}|\\\(.*?\\\)|\\\[.*?\\\]", re.DOTALL)
# `The answer is`, `Final answer:` before a word answer or a choice label.
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*[:\-]?\s*", re.IGNORECASE)
# A second choice label after the first (`(C) or (B)`, `C. B.`): a hedge, not an answer.
_OTHER_LABEL = re.compile(r"\(\s*[A-Za-z]\s*\)|(?<![A-Za-z'])[A-Z](?![A-Za-z'])")
# A multiple-choice answer: `A`, `(A)`, `A)`, `A.`, `A: 42`, `(C) 12`, `Answer: B`, `option b`.
_CHOICE = re.compile(r"^(?:(?:the\s+)?(?:final\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*)?"
                     r"(?:\(([A-Za-z])\)|([A-Za-z])(?:[.:)]|$))", re.IGNORECASE)
_CHOICE_ONLY = re.compile(r"\(?([A-Za-z])\)?\.?")
# 1e99999: a number no answer means, and one that would take sympy minutes to build
_HUGE_EXPONENT = re.compile(r"\d\s*(?:[eE][-+]?|\^\{?|\*\*)\s*\d{4,}")


# A unit after a number or a LaTeX value: `cup`, `cm^2`, `cm²`, `km/h`, `square feet`, `m per s`. Stripped
# (as the fast path ignores `12 apples`) so `3/4 cup` is 3/4 and `5 \text{ cm}^2` is 5.
_UNIT_WORD = r"[^\W\d_]+(?:\s*(?:\^\s*\{?-?\d\}?|[²³]))?"
_TRAILING_UNIT = re.compile(rf"^(?P<math>.*?[\d}}])\s+(?P<unit>{_UNIT_WORD}(?:\s*(?:/|\bper\b|\s)\s*{_UNIT_WORD})*)\.?$")
# A chemical formula (`CO2`, `CO_2`, `H_{2}O`, `NaCl`, `C₆H₁₂O₆`): letters that name elements, so compared as text
# with its case (Co is cobalt, CO carbon monoxide) and its subscripts written alike; math would read C*O_2.
_FORMULA = re.compile(r"(?:[A-Z][a-z]?(?:_?\{?\d+\}?)?){2,}|[A-Z][a-z]?_?\{?\d+\}?")
_SUBSCRIPTS = str.maketrans("₀₁₂₃₄₅₆₇₈₉", "0123456789")
# A worked line inside a sentence: `He earns 18 * 2 = 36 dollars` -> the arithmetic before `=` and the result.
_WORKED_TAIL = re.compile(r"(?P<work>[\d(][\d\s.,+\-*/×÷()%]*)=\s*(?P<result>[^=]+?)[.!]?$")


class CaseSensitive(str):
    """A reference compared as text with its case kept: `answer_type=exact`, and chemical formulas."""


def _formula(text: str) -> str | None:
    """The formula with its subscripts as plain digits (`CO_2`, `CO_{2}`, `CO₂` -> `CO2`); None when the
    text is not a formula."""
    text = _clean(text).strip().strip("$").replace("\\mathrm", "").translate(_SUBSCRIPTS)
    text = re.sub(r"\\ce\{(.*)\}$", r"\1", text)
    # a digit or a two-letter element (`NaCl`) makes it a formula; capitals alone (`YES`, `NO`) are words
    if not _FORMULA.fullmatch(text) or not re.search(r"\d|[A-Z][a-z]", text) or len(text) > 40:
        return None
    return re.sub(r"[_{}]", "", text)


def _strip_unit(text: str) -> str | None:
    """The value before a trailing unit (`3/4 cup` -> `3/4`, `\\frac{3}{4} cup` -> `\\frac{3}{4}`,
    `5 cm ^2` -> `5`); None when there is no unit, the unit denies or changes the value (`5 squared`), or
    the value holds words of its own."""
    m = _TRAILING_UNIT.match(text)
    if not m or _QUALIFIER.search(m["unit"]) or re.search(r"\b(?:and|or|to|plus|minus|times)\b", m["unit"]):
        return None
    value = m["math"].strip()
    if re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", value)):
        return None
    return value


def _unit(text: str) -> str | None:
    """The trailing unit of a number (`120 km` -> `km`, `5 \\text{ cm}^2` -> `cm^2`, `3 Apples.` -> `apple`),
    written one way: case folded, spaces and braces dropped, a plural `s` cut; None without one, or
    when it is a multiplier word (`1.5 million`)."""
    text = _clean(text)
    m = _TRAILING_UNIT.match(text) or _PLAIN.match(text)
    unit = (m and m["unit"] or "").strip().rstrip(".")
    if not unit or unit.split()[0].casefold().rstrip("s") in _SCALES:
        return None
    unit = re.sub(r"[\s{}]", "", unit.casefold())
    return unit[:-1] if unit.endswith("s") and len(unit) > 2 else unit


def _units_differ(prediction: str, reference: str) -> bool:
    """Both answers name a unit and the units differ (`120 miles` against `120 km`): not equal, whatever
    the numbers. One side without a unit (`72` against `72 apples`) is not a difference: a model's bare
    number answers a reference that names its unit. Units are compared as written, not converted: `5 km`
    against `5000 m` is a difference, and so is `km` against `kilometres`."""
    a, b = _unit(prediction), _unit(reference)
    return a is not None and b is not None and a != b


def _clean(text: str) -> str:
    """Unicode minus and the like to ASCII, `\\text{18 apples}` to its text, escaped percent signs
    unescaped, spaces collapsed."""
    text = text.replace("\u2212", "-").replace("\u2013", "-").replace("\u00a0", " ").replace("\u202f", " ")
    text = _TEXT_CMD.sub(r" \1 ", text)
    text = " ".join(text.replace("\\%", "%").split())
    return text[1:].lstrip() if text[:1] in ("~", "≈") else text  # `~42`: about 42


def _plain_number(text: str) -> Fraction | None:
    """The exact value of a plain-number answer (see `_PLAIN`); None when it is not one."""
    m = _PLAIN.match(text)
    if not m:
        return None
    try:
        value = Fraction(Decimal(m["num"].replace(",", "")))
    except (InvalidOperation, ValueError):
        return None
    remark = m["remark"]
    if remark and (_QUALIFIER.search(remark) or (any(c.isdigit() for c in remark) and not _OPERATOR.search(remark))):
        return None
    if m["unit"]:
        if _QUALIFIER.search(m["unit"]):
            return None
        value *= _SCALES.get(m["unit"].split()[0].casefold().rstrip("s"), 1)
    return -value if m["sign"] == "-" else value


def _number_set(text: str) -> frozenset[Fraction] | None:
    """`1,2,3`, `3 or 4`, `$5; $6` -> the set of their values; None when the text is not such a list."""
    if not _LIST.match(text):
        return None
    # the same number pattern the list was matched with, so `1,000, 2` keeps its thousands group
    values = [_plain_number(t) for t in re.findall(_NUM, re.sub(_CURRENCY, "", text, flags=re.IGNORECASE))]
    return frozenset(v for v in values if v is not None) if len(values) >= 2 else None


_POOL: Any = None
_POOL_LOCK = threading.Lock()
_POOL_START_SECONDS = 60  # a fresh spawned worker imports sympy and math-verify first


def _in_worker(func: Any, default: Any, *args: Any) -> Any:
    """Run `func(*args)` in a spawned worker process, on whose main thread math-verify's own
    timeout works; `default` when it does not answer in time (the worker is then killed, so a
    computation that holds the GIL in C, e.g. sympy's 9^(9^(9^9)), cannot stall this process)."""
    global _POOL
    with _POOL_LOCK:
        fresh = _POOL is None
        if fresh:
            _POOL = _spawn_pool()
        pool = _POOL
    try:
        return pool.apply_async(func, args).get(3 * TIMEOUT_SECONDS + (_POOL_START_SECONDS if fresh else 0))
    except multiprocessing.TimeoutError:
        log.warning("answer check took longer than %ss and was abandoned (scored as wrong)", 3 * TIMEOUT_SECONDS)
        with _POOL_LOCK:
            if _POOL is pool:
                pool.terminate()
                _POOL = None
        return default


def _spawn_pool() -> Any:
    """A one-process spawned pool whose worker does not run the caller's script. A spawned child imports
    the parent's `__main__` file first (multiprocessing's "safe importing of main module"): a script
    without an `if __name__ == "__main__":` guard would run again in the worker and fail there. The worker
    needs only this module, so the pool is started with a bare `__main__` in place (no file to import);
    the real one is put back at once."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        return multiprocessing.get_context("spawn").Pool(1)
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _mv_parse(text: str) -> list[Any]:
    """math-verify's parse (main thread only: its signal-based timeout); [] when nothing parses."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(text, [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=TIMEOUT_SECONDS)


def _mv_verify(gold: Any, pred: Any) -> bool:
    """math-verify's verify (gold first: it is not symmetric), main thread only."""
    from math_verify import verify as mv_verify

    return bool(mv_verify(gold, pred, timeout_seconds=TIMEOUT_SECONDS))


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _number_only(text: str) -> Fraction | frozenset[Fraction] | None:
    """The fast path alone: a plain number or a list of them; None for anything else."""
    text = _clean(text)
    if len(text) > MAX_CHARS or _HUGE_EXPONENT.search(text):
        return None
    number = _plain_number(text)
    return number if number is not None else _number_set(text)


def _parse_math(text: str) -> Any | None:
    """A plain number as a Fraction, a list of plain numbers as a frozenset, else math-verify's
    parsed sympy object; None when it is not math."""
    text = _clean(text)
    if not text or len(text) > MAX_CHARS or _HUGE_EXPONENT.search(text):
        return None
    number = _number_only(text)
    if number is not None:
        return number
    if _QUALIFIER.search(_MATH_SPANS.sub(" ", text)):
        return None
    if (value := _strip_unit(text)) is not None and value != text:
        return _parse_math(value)
    if not text.startswith(_LATEX_DELIMS) and not any(c in text for c in "\\^{"):  # free text
        algebra = bool(_ALGEBRA.fullmatch(text)) and not _LONG_NAME.search(text)
        if len(_NUMBERS.findall(text)) >= 2 and not algebra and not _BRACKETED.match(text):
            head, eq, result = text.rpartition("=")
            if eq and _is_arithmetic(head):
                # a worked line: `5 + 67 = 72` answers 72, if it holds (`40 + 1 = 42` answers nothing)
                value, worked = _parse_math(result), _parse_math(head)
                return value if value is not None and worked is not None and _equal(worked, value) else None
            if eq and (m := _WORKED_TAIL.search(text)) and _is_arithmetic(m["work"]) \
                    and not _NUMBERS.search(text[:m.start()]):
                # the same line inside a sentence, `He earns 18 * 2 = 36 dollars`: the words before it hold no
                # other number (a qualifier was refused above), the result may carry a unit
                return _parse_math(m["work"].strip() + " = " + m["result"].strip())
            if not _is_arithmetic(text):
                return None
        if algebra or _BRACKETED.match(text):
            text = f"${text}$"
    elif not text.startswith(_LATEX_DELIMS):
        text = f"${text.replace('$', '')}$"  # bare LaTeX in an answer block: math-verify wants delimiters
    parsed = [p for p in _mv_parse(text) if not isinstance(p, str)]
    return parsed[0] if parsed else None


def _is_arithmetic(text: str) -> bool:
    """Numbers joined by operators (`3/4`, `5 + 67`) or one number in spaced thousands (`1 000`); not
    numbers side by side (`43 42`) nor date-like `-01`, `/07`."""
    if not _ARITHMETIC.fullmatch(text) or _LEADING_ZERO.search(text):
        return False
    return bool(_OPERATION.search(text) or _SPACED_THOUSANDS.fullmatch(text.strip()))


def _equal(a: Any, b: Any) -> bool:
    """Two parsed math values (Fractions, sets of them, sympy objects) are equal."""
    fa, fb = _as_fraction(a), _as_fraction(b)
    if fa is not None and fb is not None:
        return fa == fb
    return _mv_verify(_sympy(a), _sympy(b))


def _exact(text: str, fold: bool = True) -> str:
    """Case (with `fold`), whitespace, LaTeX wrapping, quotes, Markdown emphasis and final punctuation
    normalised: `  Yes `, `\\text{Yes}`, `$\\boxed{yes}$`, `**Yes**`, `"yes"`, `Answer: yes` and `Yes!` -> `yes`
    (`Yes` without `fold`: `answer_type=exact` keeps case, `Co` is not `CO`)."""
    text = " ".join(_unwrap(text).split())
    text = text.casefold() if fold else text
    return text.rstrip(_END_PUNCTUATION) or text


def _unwrap(text: str) -> str:
    """A word answer without what wraps it: `The answer is`, `$...$`, `\\boxed{}`, quotes, emphasis."""
    text = _ANSWER_PREFIX.sub("", _clean(text).strip())
    while m := _WRAPPED.match(text) or _EMPHASIS.match(text):
        text = next(g for g in m.groups() if g is not None).strip()
    return text


def _choice(text: str) -> str | None:
    """The letter of a multiple-choice answer (`(C) 12`, `\\boxed{C}` -> `c`); None when the text is not
    one, or names a second label or denies it (`(C) or (B)`, `(C) is wrong`)."""
    text = _unwrap(text)
    m = _CHOICE.match(text)
    if not m:
        return None
    rest = text[m.end():]
    if _DENIAL.search(rest) or _OTHER_LABEL.search(rest):
        return None
    return (m[1] or m[2]).casefold()


def _looks_like_words(text: str) -> bool:
    """True when the text reads as words (`yes`, `Paris 2024`) rather than math: a word of three or
    more letters outside LaTeX commands and `\\text{}`."""
    text = re.sub(r"\\(?:begin|end)\{[^{}]*\}|\\text\{[^{}]*\}|\\[A-Za-z]+", " ", text)
    return bool(_WORD.search(text))


@dataclass(frozen=True)
class MathExpr:
    """A reference math-verify parsed, as its text: what `parse_reference` returns off the main
    thread, where the parse runs in the worker process and sympy objects are not passed back
    (unpickling one evaluates it, e.g. a power tower, in this process)."""

    text: str


def parse_reference(reference: str, answer_type: AnswerType = "auto") -> object | None:
    """The parsed reference answer, or None when it cannot be parsed as `answer_type`.

    `math`: a Fraction (plain number), a frozenset of Fractions (a list of numbers) or a sympy
    object (anything else math-verify parses); None for non-math text such as `yes`.
    `exact`: the normalised string (a str); None only for an empty one.
    `auto`: math when the reference parses as math and does not read as words, else exact.
    Off the main thread a sympy result comes back as a `MathExpr`.
    """
    check_answer_type(answer_type)
    if not _on_main_thread():
        parsed = _in_worker(_reference_in_worker, None, str(reference), answer_type)
        return parsed
    return _parse_reference(str(reference), answer_type)


class UnknownAnswerType(ValueError):
    """An `answer_type` (setting, reward entry, or a row's `answer_type` column) that is none of auto, math, exact."""


def check_answer_type(answer_type: object) -> None:
    """Raise UnknownAnswerType naming the value and the ones there are: an unknown type must not be
    compared as math silently (`Exact`, `string`, `numeric` in a dataset column)."""
    if answer_type not in ANSWER_TYPES:
        raise UnknownAnswerType(f"unknown answer_type {answer_type!r}: use one of {', '.join(ANSWER_TYPES)} (in "
                                "data.answer_type, a reward entry, or the data's answer_type column)")


def _reference_in_worker(reference: str, answer_type: AnswerType) -> object | None:
    parsed = _parse_reference(reference, answer_type)
    return parsed if parsed is None or isinstance(parsed, (str, Fraction, frozenset)) else MathExpr(str(parsed))


@functools.lru_cache(maxsize=8192)
def _parse_reference(text: str, answer_type: AnswerType) -> object | None:
    """`parse_reference` on the main thread; cached: a reference is checked once per group of completions."""
    letter = _CHOICE_ONLY.fullmatch(_clean(text).strip())
    if letter and (answer_type == "exact" or (answer_type == "auto" and letter[1].isupper())):
        return letter[1].casefold()  # a multiple-choice label (`B`, `(B)`), not the variable B
    if answer_type == "exact":
        return CaseSensitive(_exact(text, fold=False)) if _exact(text) else None
    if answer_type == "auto" and (formula := _formula(text)) is not None:
        return CaseSensitive(formula)
    value = _strip_unit(_clean(text)) or _clean(text)  # `3/4 cup`: math with a unit, not words
    if answer_type == "auto" and _plain_number(_clean(text)) is None and _looks_like_words(value):
        return _exact(text) or None
    parsed = _parse_math(text)
    if parsed is None and answer_type == "auto":
        return _exact(text) or None
    return parsed


def verify(prediction: str, reference: str, answer_type: AnswerType = "auto") -> bool:
    """True when `prediction` (the text of a model's answer, e.g. an `<answer>` block) equals
    `reference` under `answer_type`; False for an unparsable prediction or reference (or one whose
    check times out). Raises AnswerCheckError when the checker itself fails (math-verify not
    importable, a bug): a job error, never a silent 0.

    Plain numbers and lists of them compare exactly; other math by math-verify (numbers to 6
    decimals, symbolic equality); an exact-type reference by the normalised string.
    """
    check_answer_type(answer_type)
    if prediction is None:
        return False
    if not _on_main_thread():
        if answer_type != "exact":  # two plain numbers need no math-verify, so no worker either
            gold, pred = _number_only(str(reference)), _number_only(str(prediction))
            if gold is not None and pred is not None:
                return gold == pred
        return bool(_in_worker(verify, False, str(prediction), str(reference), answer_type))
    try:
        gold = _parse_reference(str(reference), answer_type)
        if gold is None:
            return False
        if isinstance(gold, str):
            if len(gold) == 1 and gold.isalpha() and not isinstance(gold, CaseSensitive):
                return _choice(str(prediction)) == gold  # a choice label: `(B)`, `B)`, `Answer: B` give it
            if isinstance(gold, CaseSensitive):
                if answer_type == "auto":  # a formula: the prediction's subscripts written alike
                    return (_formula(_unwrap(str(prediction))) or _exact(str(prediction), fold=False)) == gold
                return _exact(str(prediction), fold=False) == gold
            return _exact(str(prediction)) == gold
        pred = _parse_math(str(prediction))
        if pred is None or _units_differ(str(prediction), str(reference)):
            return False
        if isinstance(gold, Fraction) and (exact := _as_fraction(pred)) is not None:
            return _same_number(gold, exact)
        if isinstance(gold, (Fraction, frozenset)) or isinstance(pred, (Fraction, frozenset)):
            if type(gold) is type(pred):
                return gold == pred
            if isinstance(gold, frozenset) or isinstance(pred, frozenset):
                other = pred if isinstance(gold, frozenset) else gold
                if not _is_finite_set(other):
                    return False  # a set of candidates never equals one value
            return _mv_verify(_sympy(gold), _sympy(pred))
        return _mv_verify(gold, pred)
    except Exception as e:
        # math-verify reports its own parse and comparison failures as "no match"; what reaches here is a
        # broken install (math-verify or sympy missing) or a bug of ours. Scored 0 it would corrupt the
        # reward of every answer outside the fast path for the whole run, silently.
        raise AnswerCheckError(
            f"the answer checker failed on {str(prediction)[:200]!r} vs the reference {str(reference)[:200]!r} "
            f"({type(e).__name__}: {e}); {_install_hint(e)}") from e


class AnswerCheckError(JobError):
    """The answer checker itself failed (not the answer): training on its scores would be training on noise."""


def _install_hint(e: Exception) -> str:
    if isinstance(e, ImportError):
        return f"install the missing package ({e.name or e}): pip install math-verify==0.9.0"
    return "this is a bug of the checker: report it with the two texts above"


def _same_number(gold: Fraction, pred: Fraction) -> bool:
    """Exact equality, except against a reference written with more than 6 decimals (a float a program
    printed, `0.3333333333333333`): then equal when the prediction rounds to it at its precision."""
    if gold == pred:
        return True
    for decimals in range(7, 21):
        if (gold * 10**decimals).denominator == 1:
            return abs(gold - pred) <= Fraction(1, 2 * 10**decimals)
    return False


def _as_fraction(value: Any) -> Fraction | None:
    """A Fraction, or a sympy rational (math-verify's reading of `1/3`, `\\frac{3}{4}`) as one; else None."""
    if isinstance(value, Fraction):
        return value
    if getattr(value, "is_Rational", False):
        return Fraction(int(value.p), int(value.q))
    # `1/3` comes back unevaluated, as the product 1 * 3**-1. Read only that shape: asking sympy whether
    # any other expression is rational can evaluate it (a power tower would hold this thread for minutes).
    if getattr(value, "is_Mul", False):
        out = Fraction(1)
        for factor in value.args:
            if factor.is_Rational:
                out *= Fraction(int(factor.p), int(factor.q))
            elif factor.is_Pow and factor.base.is_Integer and factor.exp == -1 and factor.base != 0:
                out /= int(factor.base)
            else:
                return None
        return out
    return None


def _is_finite_set(value: Any) -> bool:
    """math-verify's reading of `\\{1, 2\\}` (a sympy FiniteSet), which a list of numbers equals as a set."""
    import sympy

    return isinstance(value, sympy.FiniteSet)


def _sympy(value: Any) -> Any:
    """A Fraction as a sympy Rational and a set of Fractions as a sympy FiniteSet (for math-verify);
    other values unchanged."""
    import sympy

    if isinstance(value, Fraction):
        return sympy.Rational(value.numerator, value.denominator)
    if isinstance(value, frozenset):
        return sympy.FiniteSet(*(_sympy(v) for v in value))
    return value
