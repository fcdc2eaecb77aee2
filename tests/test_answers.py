"""The answer checker on a table of answer / reference pairs, off the main thread, and on slow input.

TABLE is shared with tests/test_rewards.py (correctness reward) and tests/test_evaluate.py (the
evaluation scorer): all three must agree pair by pair.
"""

import asyncio
import threading
import time
from fractions import Fraction

import pytest

from grpo_job import answers
from grpo_job.answers import mathrules

# (answer written by the model, reference answer, correct?)
TABLE = [
    # plain numbers: exact, whatever the formatting
    ("72", "72", True),
    ("72.0", "72", True),
    ("071", "71", True),
    ("71", "72", False),
    ("9999999999999999999", "9999999999999999998", False),  # exact: no rounding to 6 places
    ("0.3333333", "1/3", False),
    # thousands separators and lists
    ("1,000", "1000", True),
    ("1000", "1,000", True),
    ("1 000", "1000", True),
    ("1,2,3", "123", False),  # a list, not one hundred twenty-three
    ("1,2,3", "1.2", False),
    ("3, 2, 1", "1, 2, 3", True),
    # LaTeX fractions and boxed
    (r"\frac{3}{4}", "4", False),
    (r"\frac{3}{4}", "0.75", True),
    (r"\frac{7}{2}", "3.5", True),
    (r"\dfrac{7}{2}", "3.5", True),
    (r"$\frac{1}{2}$", r"\frac12", True),
    ("0.5", r"\frac{1}{2}", True),
    ("3/4", "0.75", True),
    (r"\boxed{18}", "18", True),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}", True),
    (r"\boxed{19}", "18", False),
    (r"\sqrt{16}", "4", True),
    ("2^{10}", "1024", True),
    # negative numbers, Unicode minus
    ("-3", "-3", True),
    ("\u22123", "-3", True),
    ("-3", "3", False),
    (r"$\boxed{-5}$", "-5", True),
    # a sign before a bracket, a signed denominator: read, not dropped (trial of 2026-12-05)
    ("-(5)", "-5", True),
    ("-(5)", "5", False),
    ("(-5)", "-5", True),
    ("-(-5)", "5", True),
    ("2/-3", "-2/3", True),
    ("2/-3", "2/3", False),
    ("-2/3", "2/-3", True),
    # currency
    ("$72", "72", True),
    (r"\$1,000", "1000", True),
    ("-$5", "-5", True),
    ("€72", "72", True),
    ("$18.00", "18", True),
    # percentages
    ("50%", "50", True),
    ("50%", "0.5", True),
    (r"25\%", "25", True),
    ("40%", "50", False),
    # a decimal percentage reads as a whole one does (second trial: `12%` = 12 but `12.5%` != 12.5)
    ("12.5%", "12.5", True),
    (r"\boxed{12.5\%}", "12.5", True),  # second trial: wrapped, a decimal percentage was missed
    (r"The answer is $\boxed{12.5\%}$.", "12.5", True),
    ("-5", "negative 5", True),  # a sign in words in the reference too
    ("5", "negative 5", False),
    ("1-1/2 cups", "1.5", False),  # one and a half or a subtraction: no reader can tell, so no answer
    ("1-1/2 cups", "0.5", False),
    ("2 - 1/2", "1.5", False),  # a difference left to do, as `3 - 2` is
    ("1/2/2024", "1/4048", False),
    ("½", "0.5", True),
    ("1½ cups", "1.5", True),
    ("1 1/2", "1.5", True),
    ("1 1/2", "0.5", False),
    ("negative 5", "-5", True),
    ("minus 5", "5", False),
    ("12.5%", "0.125", True),
    ("50.0%", "50", True),
    ("0.5%", "0.005", True),
    (r"$12.5\%$", "12.5", True),
    ("-(5)%", "-5", True),
    ("12.5%", "13", False),
    ("12.5", "12.5%", True),
    ("0.125", "12.5%", True),
    ("13", "12.5%", False),
    ("6 + 6.5", "12.5%", False),  # a sum left to do
    # scientific notation
    ("1.5e3", "1500", True),
    (r"1.5 \times 10^{3}", "1500", True),
    ("1e400", "1", False),
    ("1e99999", "1", False),  # not built: a timeout-free refusal
    # trailing (and leading) words
    ("72 apples", "72", True),
    ("72 km/h", "72", True),
    ("18 dollars", "18", True),
    (r"\text{18 apples}", "18", True),
    ("12 (3 x 4)", "12", True),
    ("The answer is 5", "5", True),
    ("x = 5", "5", True),
    # several numbers: a worked line counts its result, a hedge earns nothing
    ("5 + 67 = 72", "72", True),
    ("3 or 4", "4", False),
    ("3 or 4", "3", False),
    ("3 and 4", "3", False),
    # non-numeric answers and references
    ("seventy-two", "72", False),
    ("", "72", False),
    ("72", "seventy-two", False),
    ("yes", "yes", True),
    ("Yes ", "yes", True),
    ("no", "yes", False),
    ("Paris", "paris", True),
    ("New  York", "new york", True),
    ("A", "A", True),
    ("B", "A", False),
    ("x^2+1", "1+x^2", True),
    # pairs, tuples, intervals and lists written bare: their structure counts, spacing does not
    ("(1, 2)", "(1,2)", True),
    ("(1,2)", "(1, 2)", True),
    ("(2, 1)", "(1, 2)", False),
    ("(1, 2)", "2", False),  # a pair is not its last number
    ("[1, 2]", "[1,2]", True),
    ("(1, 2)", "[1, 2]", False),  # open and closed intervals differ
    ("(1, 2, 3)", "(1,2,3)", True),
    (r"(\frac{1}{2}, 3)", "(0.5, 3)", True),
    ("(5)", "5", True),
    # word answers in LaTeX wrapping or with a full stop
    (r"\text{yes}", "yes", True),
    ("yes", r"\text{yes}", True),
    (r"$\text{Yes}$", "yes", True),
    (r"\boxed{yes}", "yes", True),
    (r"\boxed{\text{no}}", "yes", False),
    ("Yes.", "yes", True),
    (r"\(\text{Paris}\)", "paris", True),
    (r"**Yes**", "yes", True),
    ('"yes"', "yes", True),
    ("Yes!", "yes", True),
    ("no!", "yes", False),
    # free text with several numbers: one of them is not the answer (math-verify alone would keep it)
    ("5:31", "5:30", False),  # times and ratios compare whole
    ("5:30", "5:30", True),
    ("3 : 4", "3:4", True),  # spacing around a ratio's colon (trial)
    ("3:4", "3 : 4", True),
    ("3 : 4", "4:3", False),
    ("3:2", "3:1", False),
    ("5:30 AM", "5:30 PM", False),
    ("2024-01-06", "2024-01-05", False),  # dates are not a subtraction
    ("2024-01-05", "2024-01-05", True),
    ("between 40 and 42", "42", False),  # hedges
    ("40 or maybe 42", "42", False),
    ("from 1 to 42", "42", False),
    ("2 hours 30 minutes", "30", False),
    ("x=2, y=3", "3", False),
    ("not 42", "42", False),  # a denial is not the answer
    # a sum or product left to do is the question copied, not its result (GRPO would learn to copy it)
    ("2*3+1", "7", False),
    ("17 + 25", "42", False),
    (r"6 \times 7", "42", False),
    (r"$17+25$", "42", False),
    ("17 + 25 = 42", "42", True),  # a worked line states the result
    ("84/2", "42", True),  # a fraction is a number written another way
    ("17 + 25.", "42", False),  # and not once wrapped: final punctuation, brackets, a unit (second trial)
    ("(17+25)", "42", False),
    (r"(6 \times 7)", "42", False),
    ("17 + 25 apples", "42", False),
    ("2 * (-3)", "-6", False),  # as `2 * -3` is
    ("4 * -2", "-8", False),
    ("3 - 5.", "-2", False),
    ("(72)", "72", True),
    ("**72**", "72", True),  # Markdown bold around a number, as around a word
    ('"72"', "72", True),
    ("1.1 × 10²", "110", True),  # superscript and plain-text exponents
    ("2.5 * 10^-2", "0.025", True),
    ("10^-2", "10", False),  # LaTeX read 10^- 2 and math-verify kept 10
    ("5²", "25", True),
    ("3-", "3", False),  # cut off after an operator: no number (math-verify read 3)
    ("3 +", "3", False),
    (r"2 \times 10^{3}", "2000", True),  # and so is scientific notation
    # scale words multiply
    ("1.5 billion", "1.5 million", False),
    ("1.5", "$1.5 million", False),
    ("1500000", "$1.5 million", True),
    # short scale forms (answer-checker trial: `3k`, `$1.5M`, `2bn` earned 3, 1.5, 2); `1.5 m` is metres, `1.5 M`
    # without a currency sign may be molar
    ("3k", "3", False), ("3k", "3000", True), ("$3K", "3000", True), ("$1.5M", "1.5", False),
    ("$1.5M", "1500000", True), ("1.5 M", "1.5", True), ("2bn", "2", False), ("2bn", "2000000000", True),
    ("3 mil", "3", False), ("3 lakh", "300000", True), ("1.5 m", "1.5", True), ("3 thousandths", "3", False),
    # a bound is not the number (`at least 42` never was; its symbols were: answer-checker trial)
    ("≠ 42", "42", False), ("\\neq 42", "42", False), ("x < 42", "42", False), ("$x \\geq 42$", "42", False),
    ("\\le 42", "42", False), ("> 42", "42", False),
    # a decimal of 6 or more places against a value it can only round: math-verify's 6-decimal reading, which
    # the docstring promised and the exact path refused (answer-checker trial)
    ("0.333333", "\\frac{1}{3}", True), ("0.666667", "2/3", False), ("3.141593", "\\pi", True),
    ("1.414214", "\\sqrt{2}", True), ("0.33", "\\frac{1}{3}", False), ("3.14", "\\pi", False),
    ("0.333334", "\\frac{1}{3}", False), ("3.141592", "\\pi", False), ("0.3333333", "0.333333", False),
    # an equation states the value of its left side: the value asked for (`a + b = 7` for "find a + b")
    ("a + b = 7", "7", True), ("f(2) = 5", "5", True), ("x = 42", "42", True),
    ("2 thousand", "2000", True),
    # bare algebra, matrices, sets
    ("x+1", "1+x", True),
    ("2x+1", "1+2x", True),
    ("y = 2x + 1", "y=2x+1", True),
    (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", True),
    (r"\{1,2,3\}", "1,2,3", True),
    ("1,2,3", r"\{1,2,3\}", True),
    (r"\{1,2\}", "1,2,3", False),
    # a reference a program printed as a float
    ("1/3", "0.3333333333333333", True),
    ("0.333333", "0.3333333333333333", False),
    # multiple-choice labels
    ("(A)", "A", True),
    ("A)", "A", True),
    ("A: 42", "A", True),
    ("Answer: B", "B", True),
    ("(C) 12", "C", True),
    ("A", "(A)", True),
    ("b)", "B", True),
    ("(B)", "A", False),
    ("Apple", "A", False),
    ("A banana", "A", False),
    (r"\boxed{C}", "C", True),
    ("**C**", "C", True),
    ("(D) None of the above", "D", True),  # option text is not a denial
    ("(C) or (B)", "C", False),  # a second label is a hedge
    ("C. B.", "C", False),
    ("(C) is wrong, it's (B)", "C", False),
    ("(C) H2O", "C", True),  # a formula in the option text is no second label
    # a reference that is a label with its option's text is the label (its text was read as the answer)
    ("D) 42", "C) 42", False),
    ("(D) 42", "(C) 42", False),
    ("42", "(C) 42", False),
    ("C", "C) 42", True),
    ("(C)", "(C) 42", True),
    ("B", "B) Paris", True),
    ("(C) H2O", "(C) H2O", True),
    ("Abraham Lincoln", "A. Lincoln", False),  # `A.` is an initial, not a label: compared as words
    ("A. Lincoln", "A. Lincoln", True),
    ("D. 42", "C. 42", False),  # a full stop then no letter: a label (second trial)
    ("42", "C. 42", False),
    ("C", "C. 42", True),
    # words that deny, bound or change the number next to them
    ("42 is wrong", "42", False),
    (r"\boxed{42} is wrong", "42", False),
    ("at least 42", "42", False),
    ("42 or more", "42", False),
    ("5 squared", "5", False),
    ("2 and a half", "2", False),
    ("3 dozen", "36", True),
    ("42 hundred", "42", False),
    ("~42", "42", True),
    ("about 42", "42", True),
    # a remark in parentheses shows working, not another number
    ("12 (13)", "12", False),
    ("12 (actually 13)", "12", False),
    # numbers side by side are not arithmetic; a worked line must hold
    ("43 42", "42", False),
    ("43\n42", "42", False),
    ("40 + 1 = 42", "42", False),
    ("43 = 42", "42", False),
    # inequalities are relations, not their number
    ("x > 2", "x < 2", False),
    ("x > 42", "42", False),
    ("x > 2", "x > 2", True),
    ("Answer: yes", "yes", True),
    # math names written outside LaTeX are part of the value, on either side
    ("sqrt(2)", r"\sqrt{2}", True),
    (r"\sqrt{2}", "sqrt(2)", True),
    ("2 sqrt(3)", r"2\sqrt{3}", True),
    ("sqrt(2)/2", r"\frac{\sqrt{2}}{2}", True),
    ("sqrt(16)", "4", True),
    ("3*pi", r"3\pi", True),
    ("pi/2", r"\frac{\pi}{2}", True),
    ("sin(pi/6)", "1/2", True),
    ("3*pi", "3", False),  # math-verify's plain parser alone reads 3
    ("3pi", "3", False),
    ("3 pi", "3", False),  # not 3 of a unit `pi`
    ("3 PI", "3", False),
    ("3 Pi", r"3\pi", True),
    ("2*sqrt(2)", "2", False),
    ("2 pi radians", "2", False),
    ("12 pies", "12", True),  # a word, not the name
    ("3π", r"3\pi", True),  # the symbols too
    ("2√2", r"\sqrt{8}", True),
    ("π/3", r"\frac{\pi}{3}", True),
    ("3π", "3", False),
    ("2**10", "1024", True),  # Python's power
    # a number and a variable or constant is a product, not the number with a unit
    ("3x", "3", False),
    ("3 x", "3", False),
    ("2e", "2", False),
    ("3i", "3", False),
    ("3x", "x*3", True),
    ("5 m", "5", True),  # a one-letter unit still is one
    # scientific notation with a decimal mantissa: exact, not as binary doubles (1.1 * 10**2 != 110 in floats)
    (r"1.1 \times 10^{2}", "110", True),
    (r"4.2 \times 10^{-3}", "0.0042", True),
    ("6.02e23", r"6.02 \times 10^{23}", True),
    (r"1.6 \times 10^{-19}", "1.6e-19", True),
    ("6.02e23", "6.02*10^23", True),
    ("6.03e23", r"6.02 \times 10^{23}", False),
    (r"1.1 \times 10^{2}", "111", False),
]


def test_table_is_big_enough():
    assert len(TABLE) >= 40
    assert {ok for *_, ok in TABLE} == {True, False}


@pytest.mark.parametrize("prediction, reference, ok", TABLE)
def test_verify_table(prediction, reference, ok):
    assert answers.verify(prediction, reference) is ok


@pytest.mark.parametrize(
    "reference, answer_type, expected",
    [
        ("72", "auto", Fraction(72)),
        ("1,000", "math", Fraction(1000)),
        ("-2.5", "auto", Fraction(-5, 2)),
        ("1, 2, 3", "auto", frozenset({Fraction(1), Fraction(2), Fraction(3)})),
        ("yes", "auto", "yes"),
        ("Paris 2024", "auto", "paris 2024"),  # reads as words: exact, not the number 2024
        ("yes", "math", None),
        ("", "auto", None),
        ("  ", "exact", None),
        (" Yes ", "exact", "Yes"),  # exact keeps case (issue 23 item 12: `Co` is not `CO`)
        ("72", "exact", "72"),
    ],
)
def test_parse_reference(reference, answer_type, expected):
    assert answers.parse_reference(reference, answer_type) == expected


def test_parse_reference_latex_is_sympy():
    import sympy

    assert answers.parse_reference(r"\frac{1}{3}") == sympy.Rational(1, 3)
    assert answers.parse_reference(r"\frac{1}{3}", "exact") == r"\frac{1}{3}"


def test_answer_type_exact_compares_strings_only():
    assert answers.verify("72.0", "72", "exact") is False
    assert answers.verify(" 72 ", "72", "exact") is True
    assert answers.verify("yes", "yes", "math") is False  # not math: unparsable reference


@pytest.mark.parametrize(("prediction", "reference", "ok"), [
    ("x", "x", True),
    ("$x$", "x", True),
    (r"\(n\)", "n", True),
    ("X", "x", True),  # math-verify reads symbols without case
    ("y", "x", False),
    ("2x", "x", False),
    ("yes", "x", False),
])
def test_math_type_reads_a_lone_letter_as_a_variable(prediction, reference, ok):
    """Under `answer_type=math` the reference `x` matched nothing, not even `x` (math-verify's free-text
    parser reads no lone letter), so a row whose answer is a variable always scored 0 (new-user trial)."""
    assert answers.verify(prediction, reference, "math") is ok


def test_never_raises_on_odd_input():
    for odd in [None, 42, "\x00", "$" * 500, "{" * 300, "\\frac{" * 100, "<answer>", "1" * 5000, "nan", "inf"]:
        assert answers.verify(odd, "1") is False
        assert answers.verify("1", odd) in (True, False)


def test_slow_input_times_out_on_the_main_thread():
    # sympy evaluates this power tower for minutes; math-verify's own timeout stops it
    t0 = time.monotonic()
    assert answers.verify("9^{9^{9^{9}}}", "2") is False
    assert time.monotonic() - t0 < 6 * answers.TIMEOUT_SECONDS


def test_off_the_main_thread_the_same_answers_and_no_hang():
    """Signals only work on the main thread; TRL runs async rewards on its event-loop thread."""
    results: dict[str, object] = {}

    def work():
        t0 = time.monotonic()
        results["tower"] = answers.verify("9^{9^{9^{9}}}", "2")
        results["tower_seconds"] = time.monotonic() - t0
        results["table"] = [answers.verify(p, r) for p, r, _ in TABLE]
        results["reference"] = answers.parse_reference(r"\frac{1}{3}")

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(180)
    assert not worker.is_alive()
    assert results["tower"] is False
    # a fresh worker process first imports sympy (up to its start allowance), then the timeout
    assert results["tower_seconds"] < answers._POOL_START_SECONDS + 6 * answers.TIMEOUT_SECONDS
    assert results["table"] == [ok for *_, ok in TABLE]
    assert results["reference"] == answers.MathExpr("1/3")


def test_inside_an_event_loop_thread():
    async def check():
        return answers.verify(r"\frac{7}{2}", "3.5"), answers.verify("3 or 4", "4")

    out: list = []
    t = threading.Thread(target=lambda: out.append(asyncio.run(check())))
    t.start()
    t.join(120)
    assert out == [(True, False)]


# A shadow `math_verify` that fails to import as a broken install does (first on sys.path).
BROKEN_MATH_VERIFY = "raise ModuleNotFoundError(\"No module named 'math_verify'\", name='math_verify')\n"


@pytest.mark.parametrize(("prediction", "reference"), [
    ("11 - 9 = 2", "2"),        # the worked line the issue saw scored 0 for a whole run
    ("\\frac{1}{2}", "0.5"),
    ("x+1", "1+x"),
])
def test_a_broken_checker_is_a_job_error_not_a_zero(tmp_path, prediction, reference):
    """Without math-verify every answer outside the plain-number fast path failed to check and was scored
    0 with a warning: training went on with a corrupted reward. Now it stops the job (exit 1, the package named)."""
    (tmp_path / "math_verify.py").write_text(BROKEN_MATH_VERIFY)
    code = ("import sys; from grpo_job import answers\n"
            "assert answers.verify('42', '42')  # the fast path needs no math-verify\n"
            f"try:\n    answers.verify({prediction!r}, {reference!r})\n"
            "except answers.AnswerCheckError as e:\n    print('ERROR', e.exit_code, e); sys.exit(0)\n"
            "sys.exit('scored without an error')\n")
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ERROR 1" in r.stdout and "pip install math-verify" in r.stdout and "math_verify" in r.stdout


# ---------------------------------------------------------------- the rule tables, rule by rule
_P = answers.PASS
MATH_RULE_ROWS = [  # (rule, cleaned answer, what it decides: PASS = the next rule decides; sympy values by str)
    (mathrules._not_math_size, "", None),
    (mathrules._not_math_size, "2^{99999999}", None),
    (mathrules._not_math_size, "72", _P),
    (mathrules._not_math_size, "3-", None),
    (mathrules._not_math_size, "1/2/2024", None),  # a date, not 1/4048 (second trial)
    (mathrules._not_math_size, "2024-1-6", None),
    (mathrules._not_math_size, "1/2", _P),
    (mathrules._sentence, "The answer is (-3).", "-3"),  # second trial: the words and the stop hid it
    (mathrules._sentence, "answer: (-3)", "-3"),
    (mathrules._sentence, "answer -5", "-5"),  # no dash taken as a separator: read again, minus five
    (mathrules._sentence, "(1, 2).", "Interval.open(1, 2)"),  # as math-verify reads `(1, 2)`
    (mathrules._sentence, "(-3)", _P),
    (mathrules._sentence, "negative 5", Fraction(-5)),
    (mathrules._sentence, "minus 5", Fraction(-5)),
    (mathrules._mixed_number, "1 1/2", Fraction(3, 2)),  # second trial: read as 1 (math-verify: 1 x 1/2)
    (mathrules._mixed_number, "-2 3/4 cups", Fraction(-11, 4)),
    (mathrules._mixed_number, "1 3/2", _P),  # no proper fraction: no mixed number
    (mathrules._mixed_number, "1 1/2 x", _P),  # algebra after it
    (mathrules._mixed_number, "1/2", _P),
    (mathrules._sentence, "72.", _P),  # a number's stop is its own rule's
    (mathrules._plain_notation, "sqrt(2)", "sqrt(2)"),
    (mathrules._plain_notation, "2 sqrt((1+2)*3)", "2*sqrt((1 + 2)*3)"),  # brackets inside the radicand
    (mathrules._plain_notation, "3pi", "3*pi"),  # not 3, nor 3 of a unit `pi`
    (mathrules._plain_notation, "pi/2", "pi/2"),
    (mathrules._plain_notation, "ln(2)", "log(2, E)"),
    (mathrules._plain_notation, "not sqrt(2)", None),  # read again by every rule: the qualifier refuses it
    (mathrules._plain_notation, "12 pies", _P),  # a word, not the name
    (mathrules._plain_notation, "\\sqrt{2}", _P),  # LaTeX already
    (mathrules._plain_notation, "3π", "3*pi"),
    (mathrules._plain_notation, "2**10", "2**10"),  # as LaTeX 2^10: 1024 unevaluated
    (mathrules._plain_numbers, "$1,000", Fraction(1000)),
    (mathrules._plain_numbers, "1.5 million", Fraction(1500000)),
    (mathrules._plain_numbers, "1,2,3", frozenset({Fraction(1), Fraction(2), Fraction(3)})),
    (mathrules._plain_numbers, "x+1", _P),
    (mathrules._qualified, "not 42", None),
    (mathrules._qualified, "at least 42", None),
    (mathrules._qualified, "5 squared", None),
    (mathrules._qualified, "\\frac{1}{2}", _P),
    (mathrules._with_unit, "3/4 cup", "3/4"),
    (mathrules._with_unit, "\\frac{1}{2} kg", "1/2"),
    (mathrules._with_unit, "x+1", _P),
    (mathrules._several_numbers, "5 + 67 = 72", Fraction(72)),
    (mathrules._several_numbers, "40 + 1 = 42", None),  # a worked line that does not hold answers nothing
    (mathrules._several_numbers, "He earns 18 * 2 = 36 dollars", Fraction(36)),
    (mathrules._several_numbers, "between 40 and 42", None),
    (mathrules._several_numbers, "3/4", _P),  # arithmetic: math-verify's
    (mathrules._several_numbers, "(1, 2)", _P),  # bracketed: read as LaTeX
    (mathrules._several_numbers, "\\frac{1}{2}", _P),  # LaTeX, not free text
    (mathrules._by_math_verify, "\\frac{7}{2}", "7/2"),
    (mathrules._by_math_verify, "2^{10}", "2**10"),
    (mathrules._by_math_verify, "x+1", "x + 1"),
    (mathrules._by_math_verify, "3x", "3*x"),  # not math-verify's plain parse, which stops at 3
    (mathrules._by_math_verify, "x", "x"),  # a lone variable: math-verify's plain parse reads nothing
    (mathrules._by_math_verify, "(1, 2)", "Interval.open(1, 2)"),
    (mathrules._by_math_verify, "hello", None),
]
REFERENCE_RULE_ROWS = [  # (rule, reference, answer_type, what it decides)
    (answers._choice_label, "B", "auto", "b"),
    (answers._choice_label, "(B)", "auto", "b"),
    (answers._choice_label, "(C) 42", "auto", "c"),
    (answers._choice_label, "(C) 42", "math", _P),
    (answers._choice_label, "b", "auto", _P),  # lower case under auto: the variable b
    (answers._choice_label, "b", "exact", "b"),
    (answers._exact_type, "Yes ", "exact", answers.CaseSensitive("Yes")),
    (answers._exact_type, " ", "exact", None),
    (answers._exact_type, "Yes", "auto", _P),
    (answers._chemical_formula, "H2O", "auto", answers.CaseSensitive("H2O")),
    (answers._chemical_formula, "H2O", "math", _P),
    (answers._chemical_formula, "Paris", "auto", _P),
    (answers._words, "Paris", "auto", "paris"),
    (answers._words, "12 apples", "auto", _P),  # a plain number with a unit
    (answers._words, "3/4 cup", "auto", _P),  # math with a unit
    (answers._words, "Paris", "math", _P),
    (answers._math_or_text, "72", "auto", Fraction(72)),
    (answers._math_or_text, "\\frac{7}{2}", "math", "7/2"),
    (answers._math_or_text, "hello world", "auto", "hello world"),
    (answers._math_or_text, "hello world", "math", None),
    (answers._math_or_text, "n", "math", "n"),  # a variable is math
]


def _decided(result, expected):
    if expected is _P or expected is None:
        return result is expected
    if isinstance(expected, str) and not isinstance(result, str):
        return str(result) == expected  # a sympy value
    return result == expected and type(result) is type(expected)


@pytest.mark.parametrize("rule, text, expected", MATH_RULE_ROWS, ids=lambda v: getattr(v, "__name__", None))
def test_each_math_rule_decides_its_case_or_passes(rule, text, expected):
    assert _decided(rule(text), expected), (rule.__name__, text, rule(text))


@pytest.mark.parametrize("rule, text, answer_type, expected", REFERENCE_RULE_ROWS,
                         ids=lambda v: getattr(v, "__name__", None))
def test_each_reference_rule_decides_its_case_or_passes(rule, text, answer_type, expected):
    assert _decided(rule(text, answer_type), expected), (rule.__name__, text, rule(text, answer_type))


def test_the_rule_tables_are_walked_in_order_and_each_rule_is_documented_and_tested():
    assert [r.__name__ for r in mathrules.MATH_RULES] == ["_not_math_size", "_sentence", "_mixed_number", "_plain_notation",
                                                          "_plain_numbers",
                                                          "_qualified", "_with_unit", "_several_numbers",
                                                          "_by_math_verify"]
    assert [r.__name__ for r in answers.REFERENCE_RULES] == ["_choice_label", "_exact_type", "_chemical_formula",
                                                               "_words", "_math_or_text"]
    for table, rows in ((mathrules.MATH_RULES, MATH_RULE_ROWS), (answers.REFERENCE_RULES, REFERENCE_RULE_ROWS)):
        for rule in table:
            assert rule.__doc__ and len(rule.__doc__) > 40, rule.__name__
            decided = [r for r in rows if r[0] is rule and r[-1] is not _P]
            assert decided, f"{rule.__name__} has no table row where it decides"
    # the first rule that does not pass decides: a plain number never reaches math-verify
    assert mathrules._parse_math("  72 ") == Fraction(72) and answers._parse_reference("B", "auto") == "b"
