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
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Literal

from grpo_job.answers.mathverify import _POOL_START_SECONDS as _POOL_START_SECONDS
from grpo_job.answers.mathverify import TIMEOUT_SECONDS as TIMEOUT_SECONDS  # the interface (tests, docs)
from grpo_job.answers.mathverify import (
    _as_fraction,
    _in_worker,
    _install_hint,
    _is_finite_set,
    _mv_parse,
    _mv_verify,
    _on_main_thread,
    _same_number,
    _sympy,
)
from grpo_job.answers.patterns import (
    _ALGEBRA,
    _ANSWER_PREFIX,
    _ARITHMETIC,
    _BRACKETED,
    _CHOICE,
    _CHOICE_ONLY,
    _CURRENCY,
    _DENIAL,
    _EMPHASIS,
    _END_PUNCTUATION,
    _HUGE_EXPONENT,
    _LATEX_DELIMS,
    _LEADING_ZERO,
    _LIST,
    _LONG_NAME,
    _MATH_SPANS,
    _NUM,
    _NUMBERS,
    _OPERATION,
    _OPERATOR,
    _OTHER_LABEL,
    _PLAIN,
    _QUALIFIER,
    _SCALES,
    _SPACED_THOUSANDS,
    _WORD,
    _WORKED_TAIL,
    _WRAPPED,
    _clean,
)
from grpo_job.answers.units import _formula, _strip_unit, _units_differ
from grpo_job.errors import JobError

log = logging.getLogger(__name__)

AnswerType = Literal["auto", "math", "exact"]
ANSWER_TYPES = ("auto", "math", "exact")

MAX_CHARS = 2000
"""Answers longer than this are not parsed as math (no model answer to a word problem is that long)."""


class CaseSensitive(str):
    """A reference compared as text with its case kept: `answer_type=exact`, and chemical formulas."""


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


