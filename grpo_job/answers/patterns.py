"""The answer checker's patterns, each named for what it matches (numbers, currencies, lists, LaTeX wrappers,
units, formulas, worked arithmetic, choice labels, qualifiers that turn an answer into another claim...).
`grpo_job.answers` applies them in its rules; the tests in tests/test_answers.py are their table rows."""

from __future__ import annotations

import re

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
           "trillion": 10**12, "lakh": 10**5, "crore": 10**7}
# Their short forms, case kept (`3k`, `2bn`, `$1.5M`; `1.5 m` is metres): `3k` is 3000, never 3.
_SCALE_SUFFIXES = {"k": 10**3, "K": 10**3, "mn": 10**6, "mil": 10**6, "bn": 10**9, "tn": 10**12}
_MONEY_SUFFIXES = {"M": 10**6, "B": 10**9, "T": 10**12}  # after a currency sign only (`1.5 M` may be molar)
_CURRENCY_FIRST = re.compile(rf"^[-+]?\s*{_CURRENCY}", re.IGNORECASE)

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

# an operator between operands (a signed one too: `2/-3`, `4 * -2`), or a sign before a bracket (`-(5)`)
_OPERATION = re.compile(r"[\d)]\s*[+\-*/×÷]\s*[-+]?\s*[\d(]|^\s*[-+]\s*\(")

# Plain numbers joined by +, -, *, ×, ÷ (`17 + 25`, `6 \times 7`): a sum or product left to do, not its result.
# A fraction (`84/2`, `\frac{}{}`) and a power (`10^{3}`) are numbers written another way, not operations here.
# An operand may be a fraction (`2 - 1/2`, `1-1/2 cups`: a recipe's one and a half or a subtraction, which no
# reader can tell apart, so neither is an answer).
_OPERAND = rf"(?:{_NUM})(?:\s*/\s*(?:{_NUM}))?"
_UNEVALUATED = re.compile(rf"\s*{_OPERAND}\s*(?:(?:[+\-*×÷·]|\\times|\\cdot|\\div)\s*{_OPERAND}\s*)+")

_SPACED_THOUSANDS = re.compile(r"\d{1,3}(?: \d{3})+(?:\.\d+)?")  # `1 000 000`

_LEADING_ZERO = re.compile(r"(?:^|[-/:])\s*0\d")  # `2024-01-06`: a date, not a subtraction

# Bare algebra in single-letter variables (`x+1`, `y = 2x + 1`, `3x`): read as LaTeX, where it parses.
_ALGEBRA = re.compile(r"(?=.*[A-Za-z])(?=.*(?:[+\-*/=<>≤≥]|\d\s*[A-Za-z]))[A-Za-z\d\s.,+\-*/=<>≤≥()]+")

_LONG_NAME = re.compile(r"[A-Za-z]{2,}")

# A lone letter: a variable (`x`, `n`) or constant (`e`, `i`) as math reads it. math-verify's free-text
# parser reads none, so under `answer_type=math` the reference `x` matched nothing, not even `x`.
_LONE_LETTER = re.compile(r"[A-Za-z]")

# Words that deny, bound or change the number next to them (`not 42`, `42 is wrong`, `at least 42`,
# `5 squared`, `2 and a half`): free text holding one is not that number.
_QUALIFIER = re.compile(r"(?<!\\)\b(?:not|no|never|neither|nor|wrong|incorrect|false|except|excluding|least|most|more|"
                        r"less|fewer|over|under|above|below|almost|nearly|negative|squared|cubed|halfs?|halves|"
                        r"quarters?|thirds?|(?:ten|hundred|thousand|million)ths?|from)\b|n't\b", re.IGNORECASE)

# After a choice label, words that take it back (`(C) is wrong`); option text may bound numbers freely.
_DENIAL = re.compile(r"\b(?:not|no|never|wrong|incorrect|false)\b|n't\b", re.IGNORECASE)

# The math inside prose (`$42$ is wrong`): what is left is checked for qualifiers.
_MATH_SPANS = re.compile(r"\$\$?[^$]*\$\$?|\\boxed\{[^{}]*\}|\\\(.*?\\\)|\\\[.*?\\\]", re.DOTALL)

# `The answer is`, `Final answer:` before a word answer or a choice label.
# the words that announce an answer; a dash after them separates (`Answer - B`) unless it is a minus sign
# (`answer -5`, `answer -(3)`: minus five, minus three)
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*(?::|-(?!\s*[\d.(]))?\s*", re.IGNORECASE)

# A second choice label after the first (`(C) or (B)`, `C. B.`): a hedge, not an answer.
_OTHER_LABEL = re.compile(r"\(\s*[A-Za-z]\s*\)|(?<![A-Za-z'\d])[A-Z](?![A-Za-z'\d])")

# A multiple-choice answer: `A`, `(A)`, `A)`, `A.`, `A: 42`, `(C) 12`, `Answer: B`, `option b`.
_CHOICE = re.compile(r"^(?:(?:the\s+)?(?:final\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*)?"
                     r"(?:\(([A-Za-z])\)|([A-Za-z])(?:[.:)]|$))", re.IGNORECASE)

_CHOICE_ONLY = re.compile(r"\(?([A-Za-z])\)?\.?")

# A reference that is a capital label with its option's text: `(C) 42`, `C) H2O`, `C. 42` (not `A. Lincoln`:
# after a full stop only text that starts with no letter, as a name would).
_LABELLED_OPTION = re.compile(r"(?:\(([A-Z])\)|([A-Z])\)|([A-Z])\.(?=\s+[^\sA-Za-z]))\s+\S.*", re.DOTALL)

# 1e99999: a number no answer means, and one that would take sympy minutes to build
_HUGE_EXPONENT = re.compile(r"\d\s*(?:[eE][-+]?|\^\{?|\*\*)\s*\d{4,}")

# Math names as models write them outside LaTeX (`sqrt(2)`, `3pi`, `2 pi`, `ln(2)`, `3π`, `2√2`): part of the
# value, never a unit word. Not `log` (its base is not written) nor `e` (a variable as often as Euler's number).
_MATH_NAME = re.compile(r"(?<![\\A-Za-z])(?:sqrt|pi|ln|exp|sin|cos|tan)(?![A-Za-z])|π|√", re.IGNORECASE)

# Letters that after a number make a product with a variable or constant (`3x`, `2 n`, `3i`, `2e`), not a unit.
_VARIABLE_LETTERS = frozenset("xyzine")

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


_SUPERSCRIPT_RUN = re.compile(r"[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+")
_SUPERSCRIPTS = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")
# A plain-text exponent (`10^-2`, `10^(3)`): LaTeX reads `10^-2` as 10^{-} 2, and math-verify kept 10.
_BARE_EXPONENT = re.compile(r"\^\s*\(?\s*(-?\d+)\s*\)?")


# Unicode's vulgar fractions, as the plain fractions they are (`1½` -> `1 1/2`, a mixed number)
_VULGAR = {"½": "1/2", "⅓": "1/3", "⅔": "2/3", "¼": "1/4", "¾": "3/4", "⅕": "1/5", "⅖": "2/5", "⅗": "3/5",
           "⅘": "4/5", "⅙": "1/6", "⅚": "5/6", "⅛": "1/8", "⅜": "3/8", "⅝": "5/8", "⅞": "7/8"}
_VULGAR_RUN = re.compile(rf"(\d?)\s*([{''.join(_VULGAR)}])")


def _clean(text: str) -> str:
    """Unicode minus and the like to ASCII, `\\text{18 apples}` to its text, escaped percent signs
    unescaped, exponents in braces (`10²`, `10^-2` -> `10^{2}`, `10^{-2}`), vulgar fractions spelt out
    (`1½` -> `1 1/2`), spaces collapsed."""
    text = text.replace("\u2212", "-").replace("\u2013", "-").replace("\u00a0", " ").replace("\u202f", " ")
    text = _VULGAR_RUN.sub(lambda m: f"{m[1]} {_VULGAR[m[2]]}" if m[1] else _VULGAR[m[2]], text)
    text = _SUPERSCRIPT_RUN.sub(lambda m: "^{" + m[0].translate(_SUPERSCRIPTS) + "}", text)
    text = _BARE_EXPONENT.sub(r"^{\1}", text)
    text = _TEXT_CMD.sub(r" \1 ", text)
    text = " ".join(text.replace("\\%", "%").split())
    return text[1:].lstrip() if text[:1] in ("~", "≈") else text  # `~42`: about 42
