"""math-verify, run where its own timeout works: its `parse`/`verify` on the main thread (math-verify times
out with `signal.alarm`), elsewhere in a spawned one-process pool whose worker is killed when it does not
answer in time (a computation that holds the GIL in C cannot stall the job); and the conversions of its
sympy results to exact numbers the checker compares."""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import sys
import threading
import types
from fractions import Fraction
from typing import Any

log = logging.getLogger("grpo_job.answers")

TIMEOUT_SECONDS = 2
"""Limit for one math-verify parse or comparison (whole seconds: math-verify uses `signal.alarm`)."""

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
        pool = multiprocessing.get_context("spawn").Pool(1)
    finally:
        if main is not None:
            sys.modules["__main__"] = main
    # ended while the interpreter still works: the pool's own finalizer, run at module teardown, printed
    # "Exception ignored in Pool.__del__" on every exit of a process that had started one
    atexit.register(pool.terminate)
    return pool

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

def _same_number(gold: Fraction, pred: Fraction) -> bool:
    """Exact equality, except against a reference written with more than 6 decimals (a float a program
    printed, `0.3333333333333333`): then equal when the prediction rounds to it at its precision."""
    if gold == pred:
        return True
    for decimals in range(7, 21):
        if (gold * 10**decimals).denominator == 1:
            return abs(gold - pred) <= Fraction(1, 2 * 10**decimals)
    return False

_MAX_POWER = 400  # |exponent| of an integer power read exactly (`10^{-19}`); larger ones are left to sympy


def _factor_fraction(factor: Any) -> Fraction | None:
    """One factor of an unevaluated product as an exact Fraction: a rational, a decimal as written (sympy's
    Float `1.1` is the binary double 1.100000000000000088..., its decimal text is 1.1), or an integer power
    with a small integer exponent (`10^{2}`, `3^{-1}`); else None."""
    if factor.is_Rational:
        return Fraction(int(factor.p), int(factor.q))
    if factor.is_Float:
        return Fraction(str(factor))
    if (factor.is_Pow and factor.base.is_Integer and factor.exp.is_Integer and factor.base != 0
            and abs(int(factor.exp)) <= _MAX_POWER):
        return Fraction(int(factor.base)) ** int(factor.exp)
    return None


def _as_fraction(value: Any) -> Fraction | None:
    """A Fraction, or math-verify's reading of a number as one: a sympy rational (`1/3`, `\\frac{3}{4}`), a
    decimal, or a product of those and integer powers (`1.1 \\times 10^{2}`, `6.02e23`); else None."""
    if isinstance(value, Fraction):
        return value
    if getattr(value, "is_Rational", False) or getattr(value, "is_Float", False):
        return _factor_fraction(value)
    # `1/3` comes back unevaluated, as the product 1 * 3**-1, and `1.1 \\times 10^{2}` as 1.1 * 10**2. Read only
    # that shape: asking sympy whether any other expression is rational can evaluate it (a power tower would
    # hold this thread for minutes).
    if getattr(value, "is_Mul", False):
        out = Fraction(1)
        for factor in value.args:
            if (part := _factor_fraction(factor)) is None:
                return None
            out *= part
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

def _install_hint(e: Exception) -> str:
    if isinstance(e, ImportError):
        return f"install the missing package ({e.name or e}): pip install math-verify==0.9.0"
    return "this is a bug of the checker: report it with the two texts above"
