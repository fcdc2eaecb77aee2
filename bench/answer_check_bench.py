"""Benchmark: the answer checker (grpo_job.answers) against math-verify alone on GSM8K test references.

    python bench/answer_check_bench.py --data ../shared/data/gsm8k/test.jsonl [--limit N] \
        [--out bench/results/answer_check.json]

Each reference (the final answer after `####`, read by the job's own gsm8k task) is paired with
answers written the ways models write them (the table below: right answers in other notations, and
wrong ones that look right). Every pair is checked twice: by `grpo_job.answers.verify` (what the
correctness reward and the evaluation use) and by math-verify alone, called as TRL's
`accuracy_reward` calls it (`parse` the reference and the answer with the default extraction, then
`verify`). Printed: per answer form, the share each checker gets right and how often they agree;
the time per 1,000 checks of each (single process, main thread, warm caches excluded from nothing:
the reference cache of `answers` is cleared before the timed pass). The GSM8K rows are read from the
file given; none are stored in the output.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grpo_job import answers, data  # noqa: E402


def _dec(r: str) -> Decimal:
    return Decimal(r.replace(",", ""))


# name -> (answer written from the reference, is it right?)
FORMS: dict[str, tuple[Callable[[str], str], bool]] = {
    "same": (lambda r: r, True),
    "decimal .0": (lambda r: f"{r}.0", True),
    "currency $": (lambda r: f"${r}", True),
    "thousands 1,234": (lambda r: f"{_dec(r):,}", True),
    "unit words": (lambda r: f"{r} dollars", True),
    "boxed": (lambda r: rf"\boxed{{{r}}}", True),
    "LaTeX fraction": (lambda r: rf"\frac{{{2 * _dec(r)}}}{{2}}", True),
    "scientific 1.8e1": (lambda r: f"{_dec(r).scaleb(-1)}e1", True),
    "parenthetical": (lambda r: f"{r} (3 x 4 + 2)", True),
    "worked line": (lambda r: f"{_dec(r) - 1} + 1 = {r}", True),
    "wrong by one": (lambda r: f"{_dec(r) + 1}", False),
    "wrong by 1e-7": (lambda r: f"{r}.0000001", False),
    "hedge 'a or b'": (lambda r: f"{_dec(r) - 1} or {r}", False),
    "negated (Unicode minus)": (lambda r: f"\u2212{r}", False),
    "hedge 'between a and b'": (lambda r: f"between {_dec(r) - 1} and {r}", False),
    "denied 'not b'": (lambda r: f"not {r}", False),
    "time-like a:b": (lambda r: f"{r}:30", False),
    "scale word": (lambda r: f"{r} million", False),
}


def math_verify_alone(prediction: str, reference: str) -> bool:
    """math-verify as TRL's accuracy_reward uses it on the main thread (default extraction)."""
    from math_verify import parse, verify

    gold = parse(reference, parsing_timeout=5)
    return bool(gold) and bool(verify(gold, parse(prediction, parsing_timeout=5), timeout_seconds=5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="GSM8K test.jsonl (question/answer rows)")
    ap.add_argument("--limit", type=int, default=None, help="first N references only")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "answer_check.json"))
    args = ap.parse_args()

    task = data.TASKS["gsm8k"]
    rows = data.read_rows(Path(args.data))
    refs = [task.answer(r[task.answer_column]) for r in rows][: args.limit]
    pairs = [(form, make(ref), ref, right) for ref in refs for form, (make, right) in FORMS.items()
             if _dec(ref) != 0 or form != "negated (Unicode minus)"]

    import math_verify  # noqa: F401  (imports out of the timed passes)

    answers.verify("1", "1")
    results = {}
    for name, check in (("answers.verify", answers.verify), ("math-verify alone", math_verify_alone)):
        answers._parse_reference.cache_clear()
        t0 = time.perf_counter()
        results[name] = [check(p, r) for _, p, r, _ in pairs]
        results[name + " seconds"] = time.perf_counter() - t0

    ours, alone = results["answers.verify"], results["math-verify alone"]
    table = []
    for form in FORMS:
        idx = [i for i, (f, *_) in enumerate(pairs) if f == form]
        right = pairs[idx[0]][3]
        shown = next((i for i in idx if pairs[i][1] != pairs[i][2]), idx[0])  # an example that differs
        table.append({
            "form": form, "example": pairs[shown][1], "reference": pairs[shown][2], "right": right, "n": len(idx),
            "ours_correct": sum(ours[i] == right for i in idx) / len(idx),
            "alone_correct": sum(alone[i] == right for i in idx) / len(idx),
            "agree": sum(ours[i] == alone[i] for i in idx) / len(idx),
        })
    n = len(pairs)
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.platform(),
        "python": platform.python_version(), "references": len(refs), "checks": n,
        "agree_all": sum(a == b for a, b in zip(ours, alone, strict=True)) / n,
        "agree_on_gsm8k_references_as_written": table[0]["agree"],
        "ours_correct": sum(o == p[3] for o, p in zip(ours, pairs, strict=True)) / n,
        "alone_correct": sum(a == p[3] for a, p in zip(alone, pairs, strict=True)) / n,
        "ms_per_1000_ours": 1e6 * results["answers.verify seconds"] / n,
        "ms_per_1000_alone": 1e6 * results["math-verify alone seconds"] / n,
        "forms": table,
    }
    print(f"{len(refs)} GSM8K test references x {len(FORMS)} answer forms = {n} checks")
    print("| answer form | example (reference) | right? | answers.verify correct | math-verify alone correct | agree |")
    print("|---|---|---|---|---|---|")
    for t in table:
        print(f"| {t['form']} | `{t['example']}` ({t['reference']}) | {'yes' if t['right'] else 'no'} | "
              f"{t['ours_correct']:.1%} | {t['alone_correct']:.1%} | {t['agree']:.1%} |")
    print(f"| **all** | | | {summary['ours_correct']:.1%} | {summary['alone_correct']:.1%} | {summary['agree_all']:.1%} |")
    print(f"time per 1,000 checks: answers.verify {summary['ms_per_1000_ours']:.0f} ms, "
          f"math-verify alone {summary['ms_per_1000_alone']:.0f} ms")
    Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
