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
`= result` that holds (`40 + 1 = 42` answers nothing); against a plain-number reference a sum or product
left to do (`17 + 25`, `6 \\times 7`) is no answer (copying the question would earn the reward), and
neither is an answer cut off after an operator (`3-`); words that deny, bound or change the number
(`not 42`, `42 is wrong`, `at least 42`, `5 squared`, `2 and a half`) make it no answer, and a
remark in parentheses may show working (`12 (3 x 4)`) but not another number (`12 (13)`): math-verify's free-text reading would keep one
number of `5:31`, `2024-01-06` or `between 40 and 42`. A reference printed as a long float
(`0.3333333333333333`) equals what rounds to it at its precision. A bare pair, tuple,
interval or list (`(1, 2)`, `[0,1]`) is read as LaTeX, so its structure counts and its spacing does
not; bare algebra (`x+1`, `3x`) is read as LaTeX too, and math written outside LaTeX (`sqrt(2)`, `3pi`,
`3π`, `2√2`, `2**10`) is rewritten as LaTeX first, so `3pi` and `3x` are never 3. Non-math answers (`yes`, `Paris`) are compared as
strings with case, whitespace, LaTeX wrapping (`\\text{}`, `$...$`, `\\boxed{}`), quotes, Markdown
emphasis and final punctuation normalised. A single capital letter reference (`B`, `(B)`, or with its option text: `(B) 12`) is a
multiple-choice label: `(B)`, `B)`, `B.`, `\\boxed{B}`, `Answer: B` and `(B) 12` give it, and a
second label or a denial after it (`(B) or (C)`, `(B) is wrong`) takes it back.

math-verify can be slow on adversarial input. On the main thread (where TRL calls synchronous
rewards and the evaluation runs) its own signal-based timeout applies. Off the main thread (an
async reward on TRL's event-loop thread) signals cannot be used and a thread cannot be stopped
(sympy's big-integer powers hold the GIL), so the math-verify calls go to one spawned worker
process, killed when it does not answer in time. Either way a timeout scores False and never hangs
a training step.

The rules are two ordered tables of small functions, each deciding its case or passing it on (`PASS`):
`REFERENCE_RULES` (here) read a reference answer, `MATH_RULES` (grpo_job/answers/mathrules.py) read an
answer as math; every pattern they use is named in patterns.py, units and formulas are in units.py,
and math-verify's calls (with its timeouts and worker) in mathverify.py.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

from grpo_job.answers.mathrules import (
    _SIGN_WORD,
    PASS,
    _number_only,
    _parse_math,
    _plain_number,
)
from grpo_job.answers.mathverify import _POOL_START_SECONDS as _POOL_START_SECONDS
from grpo_job.answers.mathverify import TIMEOUT_SECONDS as TIMEOUT_SECONDS  # the interface (tests, docs)
from grpo_job.answers.mathverify import (
    _as_fraction,
    _in_worker,
    _install_hint,
    _is_finite_set,
    _mv_verify,
    _on_main_thread,
    _same_number,
    _sympy,
)
from grpo_job.answers.patterns import (
    _ANSWER_PREFIX,
    _CHOICE,
    _CHOICE_ONLY,
    _DENIAL,
    _EMPHASIS,
    _END_PUNCTUATION,
    _LABELLED_OPTION,
    _MATH_NAME,
    _NUM,
    _OTHER_LABEL,
    _UNEVALUATED,
    _WORD,
    _WRAPPED,
    _clean,
)
from grpo_job.answers.units import _formula, _strip_unit, _units_differ
from grpo_job.errors import JobError

log = logging.getLogger(__name__)

AnswerType = Literal["auto", "math", "exact"]
ANSWER_TYPES = ("auto", "math", "exact")

class CaseSensitive(str):
    """A reference compared as text with its case kept: `answer_type=exact`, and chemical formulas."""


_RATIO_SPACES = re.compile(r"(?<=\d) ?: ?(?=\d)")


def _exact(text: str, fold: bool = True) -> str:
    """Case (with `fold`), whitespace, LaTeX wrapping, quotes, Markdown emphasis and final punctuation
    normalised: `  Yes `, `\\text{Yes}`, `$\\boxed{yes}$`, `**Yes**`, `"yes"`, `Answer: yes` and `Yes!` -> `yes`
    (`Yes` without `fold`: `answer_type=exact` keeps case, `Co` is not `CO`)."""
    text = " ".join(_unwrap(text).split())
    text = _RATIO_SPACES.sub(":", text)  # `3 : 4` is the ratio `3:4` (and `5 : 30` the time)
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
    more letters outside LaTeX commands, `\\text{}` and math names (`sqrt(2)`)."""
    text = re.sub(r"\\(?:begin|end)\{[^{}]*\}|\\text\{[^{}]*\}|\\[A-Za-z]+", " ", text)
    text = _MATH_NAME.sub(" ", text)
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


def _choice_label(text: str, answer_type: AnswerType) -> Any:
    """A single capital letter (`B`, `(B)`) is a multiple-choice label under `auto` (any letter under
    `exact`), not the variable B: the lower-case letter, which `verify` compares by `_choice`. Under `auto`
    a label with its option's text (`(C) 42`, `C) H2O`) is the label too: the text was read as the answer,
    so `D) 42` and a bare `42` earned it and `C` did not."""
    text = _clean(text).strip()
    letter = _CHOICE_ONLY.fullmatch(text)
    if letter and (answer_type == "exact" or (answer_type == "auto" and letter[1].isupper())):
        return letter[1].casefold()
    if answer_type == "auto" and (option := _LABELLED_OPTION.fullmatch(text)):
        return (option[1] or option[2] or option[3]).casefold()
    return PASS


def _exact_type(text: str, answer_type: AnswerType) -> Any:
    """`answer_type=exact`: the normalised string with its case (CaseSensitive); None when empty."""
    if answer_type != "exact":
        return PASS
    return CaseSensitive(_exact(text, fold=False)) if _exact(text) else None


def _chemical_formula(text: str, answer_type: AnswerType) -> Any:
    """A chemical formula under `auto` (`H2O`, `CO2`, `H_2O`, `NaCl`): its canonical form, case kept (`CO2` is not
    `Co2`). One without a digit or a two-letter element (`CO`, `NO`, `He`) reads as a word (`NO` may be the
    answer no), case folded: `answer_type=exact` keeps its case."""
    if answer_type == "auto" and (formula := _formula(text)) is not None:
        return CaseSensitive(formula)
    return PASS


def _words(text: str, answer_type: AnswerType) -> Any:
    """Under `auto`, a reference that reads as words (`yes`, `Paris 2024`) and is not a plain number is
    text: the normalised string (case folded). Math with a unit (`3/4 cup`) is not words."""
    value = _strip_unit(_clean(text)) or _clean(text)
    if _SIGN_WORD.match(value):  # `negative 5` is a number in words, as a prediction's is
        return PASS
    if answer_type == "auto" and _plain_number(_clean(text)) is None and _looks_like_words(value):
        return _exact(text) or None
    return PASS


def _math_or_text(text: str, answer_type: AnswerType) -> Any:
    """Math (MATH_RULES); under `auto`, text (the normalised string) when it is not math."""
    parsed = _parse_math(text)
    if parsed is None and answer_type == "auto":
        return _exact(text) or None
    return parsed


REFERENCE_RULES = (_choice_label, _exact_type, _chemical_formula, _words, _math_or_text)
"""How a reference answer is read, in order: the first rule that does not PASS decides (the last always does)."""


@functools.lru_cache(maxsize=8192)
def _parse_reference(text: str, answer_type: AnswerType) -> object | None:
    """`parse_reference` on the main thread (REFERENCE_RULES); cached: a reference is checked once per
    group of completions."""
    for rule in REFERENCE_RULES:
        if (result := rule(text, answer_type)) is not PASS:
            return result
    raise AssertionError("unreachable: the last reference rule always decides")


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
        if isinstance(gold, Fraction) and (_left_to_do(str(prediction)) or _not_a_value(str(prediction))):
            # the model must state the number: `17 + 25` is the question of "What is 17 + 25?" copied, and a
            # reward for it is one GRPO finds (a worked line, `17 + 25 = 42`, states it and counts); `≠ 42` and
            # `< 42` bound it, as `at least 42` does
            return False
        if (exact_gold := _as_fraction(gold)) is not None and (share := _percentage(str(prediction))) is not None:
            # `12.5%` answers 12.5 (a question asking the percentage) and 0.125 (asking the share), as `12%` does
            return _same_number(exact_gold, share) or _same_number(exact_gold, share / 100)
        if (gold_share := _percentage(str(reference))) is not None:  # and a reference `12.5%` takes 12.5 and 0.125
            if _left_to_do(str(prediction)):
                return False
            value = _percentage(str(prediction))
            if value is None and (parsed := _parse_math(str(prediction))) is not None and not isinstance(parsed, frozenset):
                value = _as_fraction(parsed)
            if value is not None:
                return _same_number(gold_share, value) or _same_number(gold_share / 100, value)
        pred = _parse_math(str(prediction))
        if pred is None or _units_differ(str(prediction), str(reference)):
            return False
        # two numbers, however written (`110`, `1.1 \\times 10^{2}`, `6.02e23`): exactly, as fractions; sympy's
        # floats would compare the binary doubles (1.1 * 10**2 is 110.00000000000001). A LaTeX reference without
        # a finite decimal (`\\frac{1}{3}`) is left to math-verify, whose rounding takes 0.333333.
        exact_gold, exact = _as_fraction(gold), _as_fraction(pred)
        if isinstance(pred, Fraction) and not isinstance(gold, (Fraction, frozenset)) and (places := _places(pred)) >= 6 \
                and (exact_gold is None or ("\\" in str(reference) and not _finite_decimal(exact_gold))):
            # a decimal of 6 or more places against math it can only round (`0.333333` for `\frac{1}{3}`, `3.141593`
            # for `\pi`): equal when it is that value rounded at its places, math-verify's 6-decimal reading. A
            # reference written without LaTeX (`1/3`) stays exact, as plain numbers compare.
            if exact_gold is not None:
                return abs(exact_gold - pred) <= Fraction(1, 2 * 10**places)
            return _mv_verify(_sympy(gold), _float(pred))
        if exact_gold is not None and exact is not None and (isinstance(gold, Fraction) or _finite_decimal(exact_gold)):
            return _same_number(exact_gold, exact)
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


_SIGNED_IN_BRACKETS = re.compile(rf"\(\s*([-+]\s*(?:{_NUM}))\s*\)")


def _left_to_do(text: str) -> bool:
    """A sum, difference or product of plain numbers not worked out (`17 + 25`, `(6 \\times 7)`, `17 + 25
    apples.`), whatever wraps it: brackets, a unit, final punctuation, `$`, emphasis."""
    text = _exact(text, fold=False)  # the word answers' normalisation: wrappers, emphasis, final punctuation
    while text[:1] == "(" and text[-1:] == ")":
        text = text[1:-1].strip()
    text = _SIGNED_IN_BRACKETS.sub(r"\1", text)  # `2 * (-3)` is left to do as `2 * -3` is
    return bool(_UNEVALUATED.fullmatch(_strip_unit(text) or text))


# a relation other than equality (`≠ 42`, `x < 42`, `\\geq 42`): against a number it states a bound, not the number.
# An equation is left alone: `a + b = 7`, `f(2) = 5`, `x^2 = 42` state the value asked for, and an equation copied
# from the question (`x + 39 = 42`) has the question's number on its right, not the answer's.
_RELATION = re.compile(r"≠|<|>|≤|≥|!=|\\(?:neq?|leq?|geq?|lt|gt|leqslant|geqslant)(?![A-Za-z])")


def _not_a_value(text: str) -> bool:
    """A bound (`≠ 42`, `x < 42`, `\\le 42`), whatever wraps it."""
    return bool(_RELATION.search(_exact(text, fold=False)))


_PERCENTAGE = re.compile(r"(?P<number>.+?)\s*(?:%|percent\b)[.!]?", re.IGNORECASE)
_FINAL_STOP = re.compile(r"^(.+?)\s*[.!]$", re.DOTALL)


def _percentage(text: str) -> Fraction | None:
    """The number before a per cent sign (`12.5%`, `$12.5\\%$`, `-(5)%`, `12.5 percent`), exactly; None when the
    text is no one number and a per cent sign."""
    text = _unwrap(text)
    while m := _FINAL_STOP.match(text):  # `$\boxed{12.5\%}$.`: the stop, then what it wrapped
        text = _unwrap(m[1])
    if not (m := _PERCENTAGE.fullmatch(text)):
        return None
    value = _parse_math(m["number"])
    return _as_fraction(value) if value is not None and not isinstance(value, frozenset) else None


def _places(value: Fraction) -> int:
    """The decimal places of a finite decimal (`0.333333`: 6), 0 for an integer or any other fraction."""
    for places in range(21):
        if (value * 10**places).denominator == 1:
            return places
    return 0


def _float(value: Fraction) -> Any:
    """A finite decimal as a sympy Float of its digits (math-verify rounds Floats, not Rationals)."""
    import sympy

    return sympy.Float(str(Decimal(value.numerator) / Decimal(value.denominator)), 30)


def _finite_decimal(value: Fraction) -> bool:
    """Whether `value` has a finite decimal expansion (its denominator has no prime factor but 2 and 5)."""
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


class AnswerCheckError(JobError):
    """The answer checker itself failed (not the answer): training on its scores would be training on noise."""


