"""Units and chemical formulas in answers: a trailing unit split off a number (`18 km` -> `18`, `km`), units
compared as written when both answers name one (`120 miles` is not `120 km`; no conversion), and formulas
(`H2O`, `CO_2`) compared as formulas, not parsed as products of symbols."""

from __future__ import annotations

import re

from grpo_job.answers.patterns import (
    _FORMULA,
    _MATH_NAME,
    _PLAIN,
    _QUALIFIER,
    _SCALES,
    _SUBSCRIPTS,
    _TRAILING_UNIT,
    _VARIABLE_LETTERS,
    _clean,
)


def _formula(text: str) -> str | None:
    """The formula with its subscripts as plain digits (`CO_2`, `CO_{2}`, `CO₂` -> `CO2`); None when the
    text is not a formula."""
    text = _clean(text).strip().strip("$").replace("\\mathrm", "").translate(_SUBSCRIPTS)
    text = re.sub(r"\\ce\{(.*)\}$", r"\1", text)
    # a digit or a two-letter element (`NaCl`) makes it a formula; capitals alone (`YES`, `NO`) are words
    if not _FORMULA.fullmatch(text) or not re.search(r"\d|[A-Z][a-z]", text) or len(text) > 40:
        return None
    return re.sub(r"[_{}]", "", text)


def _is_math(unit: str) -> bool:
    """Words after a number that are part of the value, not a unit: a math name (`3 pi`, `3/4 π`) or a
    variable or constant letter (`3x`, `2 e`)."""
    return bool(_MATH_NAME.search(unit)) or unit.strip() in _VARIABLE_LETTERS


def _strip_unit(text: str) -> str | None:
    """The value before a trailing unit (`3/4 cup` -> `3/4`, `\\frac{3}{4} cup` -> `\\frac{3}{4}`,
    `5 cm ^2` -> `5`); None when there is no unit, the unit denies or changes the value (`5 squared`), or
    the value holds words of its own."""
    m = _TRAILING_UNIT.match(text)
    if not m or _QUALIFIER.search(m["unit"]) or re.search(r"\b(?:and|or|to|plus|minus|times)\b", m["unit"]):
        return None
    if _is_math(m["unit"]):
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
