"""How an answer is read as math: the ordered rules of `MATH_RULES`, each deciding its case or passing it
on (`PASS`), and the exact number fast path they start with (see grpo_job/answers/__init__.py for what
the checker does as a whole)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from grpo_job.answers.mathverify import _as_fraction, _mv_parse, _mv_verify, _sympy
from grpo_job.answers.patterns import (
    _ALGEBRA,
    _ANSWER_PREFIX,
    _ARITHMETIC,
    _BRACKETED,
    _CURRENCY,
    _CURRENCY_FIRST,
    _EMPHASIS,
    _HUGE_EXPONENT,
    _LATEX_DELIMS,
    _LEADING_ZERO,
    _LIST,
    _LONE_LETTER,
    _LONG_NAME,
    _MATH_NAME,
    _MATH_SPANS,
    _MONEY_SUFFIXES,
    _NUM,
    _NUMBERS,
    _OPERATION,
    _OPERATOR,
    _PLAIN,
    _QUALIFIER,
    _SCALE_SUFFIXES,
    _SCALES,
    _SPACED_THOUSANDS,
    _WORKED_TAIL,
    _clean,
)
from grpo_job.answers.units import _is_math, _strip_unit

MAX_CHARS = 2000
"""Answers longer than this are not parsed as math (no model answer to a word problem is that long)."""


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
        if _QUALIFIER.search(m["unit"]) or _is_math(m["unit"]):
            return None  # `3 pi` is 3π and `3x` a product, not 3 of something
        word = m["unit"].split()[0]
        value *= _SCALE_SUFFIXES.get(word) or (_MONEY_SUFFIXES.get(word) if _CURRENCY_FIRST.match(text) else None) \
            or _SCALES.get(word.casefold().rstrip("s"), 1)
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


class _Pass:
    """The answer of a rule that does not decide the case: the next rule of its table decides."""

    def __repr__(self) -> str:
        return "PASS"


PASS = _Pass()


def _free_text(text: str) -> bool:
    """Not LaTeX: no `$`/`\\(`/`\\[` delimiters at the start and no backslash, `^` or `{`."""
    return not text.startswith(_LATEX_DELIMS) and not any(c in text for c in "\\^{")


def _algebra(text: str) -> bool:
    """Bare algebra (`x+1`, `2x^2`), not a long name that happens to hold letters and operators."""
    return bool(_ALGEBRA.fullmatch(text)) and not _LONG_NAME.search(text)


_DANGLING_OPERATOR = re.compile(r"[+\-*/×÷^=]\s*$")


_DATE = re.compile(r"\d{1,2}/\d{1,2}/\d{2,4}|\d{4}-\d{1,2}-\d{1,2}")


def _not_math_size(text: str) -> Any:
    """Empty, longer than MAX_CHARS, a huge exponent (`9^9^9`, `1e999999`), cut off after an operator
    (`3-`, `3 +`: math-verify read 3), or a date (`1/2/2024`, `2024-1-6`: never a quotient nor a difference):
    not math (None)."""
    if (not text or len(text) > MAX_CHARS or _HUGE_EXPONENT.search(text) or _DANGLING_OPERATOR.search(text)
            or _DATE.fullmatch(text)):
        return None
    return PASS


_SQRT_OPEN = re.compile(r"\\sqrt\s*\(")
_SYMBOL_NAMES = {"π": "pi", "√": "sqrt"}


def _sqrt_braces(text: str) -> str:
    """`\\sqrt (x+1)` -> `\\sqrt{x+1}`: LaTeX takes the radicand in braces (its brackets balanced;
    an unbalanced one is left as written)."""
    out, i = [], 0
    while (m := _SQRT_OPEN.search(text, i)) is not None:
        depth, end = 0, None
        for k in range(m.end() - 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[k], 0)
            if depth == 0:
                end = k
                break
        if end is None:
            break
        out.append(text[i:m.start()] + "\\sqrt{" + text[m.end():end] + "}")
        i = end + 1
    return "".join(out) + text[i:]


# a sign in words, and a full stop after a bracket
_SIGN_WORD = re.compile(r"^(?:negative|minus)\s+(?=[\d($\\])", re.IGNORECASE)
# a whole number and a proper fraction side by side: `1 1/2` cups is one and a half (math-verify read 1 x 1/2)
_MIXED = re.compile(r"(?P<sign>-)?\s*(?P<whole>\d+)\s+(?P<num>\d+)\s*/\s*(?P<den>\d+)(?P<rest>(?:\s+[^\W\d_][^\d()=+*/^\\]*)?)")
_STOP_AFTER_BRACKET = re.compile(r"(?<=[)\]}])\s*[.!]$")


def _sentence(text: str) -> Any:
    """`The answer is (-3).`, `answer: (-3)`: the announcing words and the sentence's full stop are no part of
    the answer, parsed again without them (a plain number's are taken by its own rule already)."""
    bare = _STOP_AFTER_BRACKET.sub("", _ANSWER_PREFIX.sub("", text, count=1)).strip()
    bare = _SIGN_WORD.sub("-", bare)  # `negative 5`, `minus 5`
    return _parse_math(bare) if bare and bare != text else PASS


def _mixed_number(text: str) -> Any:
    """`1 1/2`, `-2 3/4`, `1 1/2 cups` (a unit after it): the whole number plus the proper fraction, exactly."""
    if not (m := _MIXED.fullmatch(text)) or not 0 < int(m["num"]) < int(m["den"]):
        return PASS
    if m["rest"].strip() and (_QUALIFIER.search(m["rest"]) or _is_math(m["rest"].strip())):
        return PASS
    value = int(m["whole"]) + Fraction(int(m["num"]), int(m["den"]))
    return -value if m["sign"] else value


def _plain_notation(text: str) -> Any:
    """Math written outside LaTeX (`sqrt(2)`, `3pi`, `2 sqrt(3)`, `pi/2`, `ln(2)`, `3π`, `2√2`, `2**10`)
    rewritten as the LaTeX math-verify reads (`\\sqrt{2}`, `3\\pi`, `2^10`...), then read by these rules
    again. math-verify's plain parser reads `3*pi` as 3 and `sqrt(2)` as nothing, and `3 pi` is no
    number with a unit."""
    if not _MATH_NAME.search(text) and "**" not in text:
        return PASS
    # lower case: `\\Pi` is another symbol, `3 PI` is 3π
    latex = _MATH_NAME.sub(lambda m: f"\\{_SYMBOL_NAMES.get(m[0], m[0].lower())} ", text).replace("**", "^")
    return _parse_math(_sqrt_braces(latex))


def _plain_numbers(text: str) -> Any:
    """A plain number (`72`, `$1,000`, `1.5e3`, `12 apples`, `1.5 million`) as its exact Fraction, a list
    of them (`1,2,3`, `3 or 4`) as a frozenset."""
    number = _number_only(text)
    return PASS if number is None else number


def _qualified(text: str) -> Any:
    """Words that deny, bound or change a number outside math spans (`not 42`, `at least 42`, `5 squared`):
    no answer (None)."""
    return None if _QUALIFIER.search(_MATH_SPANS.sub(" ", text)) else PASS


def _with_unit(text: str) -> Any:
    """Math with a unit (`3/4 cup`, `\\frac{1}{2} kg`): the math without the unit, parsed again."""
    value = _strip_unit(text)
    return _parse_math(value) if value is not None and value != text else PASS


def _several_numbers(text: str) -> Any:
    """Free text with two or more numbers counts only as arithmetic (`3/4`, `5 + 67`, passed on) or a worked
    line that holds: `5 + 67 = 72` and `He earns 18 * 2 = 36 dollars` answer their result, `40 + 1 = 42`
    and `between 40 and 42` nothing (None). Algebra and bracketed tuples are passed on."""
    if not _free_text(text) or len(_NUMBERS.findall(text)) < 2 or _algebra(text) or _BRACKETED.match(text):
        return PASS
    head, eq, result = text.rpartition("=")
    if eq and _is_arithmetic(head):
        value, worked = _parse_math(result), _parse_math(head)
        return value if value is not None and worked is not None and _equal(worked, value) else None
    if eq and (m := _WORKED_TAIL.search(text)) and _is_arithmetic(m["work"]) and not _NUMBERS.search(text[:m.start()]):
        # the words before the worked line hold no other number (a qualifier was refused before), the result
        # may carry a unit
        return _parse_math(m["work"].strip() + " = " + m["result"].strip())
    return PASS if _is_arithmetic(text) else None


def _by_math_verify(text: str) -> Any:
    """Everything else, by math-verify's parser: LaTeX (bare LaTeX gets the `$` delimiters it wants),
    bare algebra, a lone variable (`x`), arithmetic (`-(5)`: math-verify's plain parser reads nothing there)
    and bracketed pairs, tuples, intervals and lists as LaTeX (their structure counts, their spacing not);
    its first parsed value (a sympy object), None when it parses none."""
    if _free_text(text):
        if _algebra(text) or _LONE_LETTER.fullmatch(text) or _BRACKETED.match(text) or (
                _is_arithmetic(text) and _OPERATION.search(text)):
            text = f"${text}$"
    elif not text.startswith(_LATEX_DELIMS):
        text = f"${text.replace('$', '')}$"
    parsed = [p for p in _mv_parse(text) if not isinstance(p, str)]
    return parsed[0] if parsed else None


MATH_RULES = (_not_math_size, _sentence, _mixed_number, _plain_notation, _plain_numbers, _qualified, _with_unit,
              _several_numbers, _by_math_verify)
"""How an answer is read as math, in order: the first rule that does not PASS decides (the last always does)."""


def _parse_math(text: str) -> Any | None:
    """A plain number as a Fraction, a list of plain numbers as a frozenset, else math-verify's
    parsed sympy object; None when it is not math (MATH_RULES on the cleaned text)."""
    text = _clean(text)
    while m := _EMPHASIS.fullmatch(text):  # `**72**`: Markdown bold (a chat model's habit), quotes
        text = next(g for g in m.groups() if g is not None).strip()
    for rule in MATH_RULES:
        if (result := rule(text)) is not PASS:
            return result
    raise AssertionError("unreachable: the last math rule always decides")


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
