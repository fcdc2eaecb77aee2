"""Calling rewards as TRL calls them, before training: on sampled or synthetic completions, with TRL's keyword
arguments (the dataset columns, `prompts`, `completion_ids`, `trainer_state`...) and shapes, each call under
the reward time limit. A reward that raises, hangs, returns the wrong number of scores or a non-number
is a SettingsError (exit 2) naming `rewards.<name>` and the completion that broke it.

- `check_rewards`: every reward on given completions (the preflight stage, and the dry call);
- `dry_call`: every reward on two synthetic completions of the first `DRY_ROWS` data rows (`check` and
  prepare_data, before any model is loaded);
- `check_reward_rows`: every row the job's own rewards read columns of (code tests, JSON schemas) is readable;
- `check_reward_columns`: the dataset columns each reward's signature asks for are there.
"""

from __future__ import annotations

import asyncio
import decimal
import functools
import inspect
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from grpo_job import data
from grpo_job import rewards as R
from grpo_job.errors import EXIT_INVALID, SettingsError
from grpo_job.rewards import limits

log = logging.getLogger(__name__)

_SHOWN = 600  # characters of an offending completion shown in an error


def shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def check_rewards(rewards: Mapping[str, Any] | Sequence[str], rows: list[dict], completions: list[str],
                  completion_ids: list[list[int]] | None = None, found_by: str = "",
                  light: bool = False, time_limit: float | None = None) -> dict[str, list[float]]:
    """Call every reward on (prompt row, completion) pairs as TRL's GRPOTrainer calls it; return the
    scores by reward name (NaN where a reward returned None: TRL skips those).

    `rewards`: built rewards by settings name (`rewards.build_all`), or names built with their
    defaults. As in TRL's `_calculate_rewards`: keyword arguments `prompts`, `completions` (chat
    messages when the prompts are, else text), `completion_ids`, every other dataset column,
    `trainer_state`, `log_extra`, `log_metric`; async rewards are awaited; None is a skipped
    completion. Raises SettingsError naming the reward and its setting (`rewards.<name>`) and showing
    the completion that broke it when a reward raises, returns the wrong number of scores, or returns
    a non-number; `found_by` (what produced the completions) is added to that message. `light`: the
    TrainerState (building one imports torch) is built only when a user reward (`module:function`) is
    among them; the job's and TRL's own rewards never read `trainer_state` and get None. `time_limit`:
    seconds each call may take (`health.reward_time_limit`); a reward over it fails at once (SettingsError)."""
    funcs = dict(rewards) if isinstance(rewards, Mapping) else {name: R.build(name) for name in rewards}
    if time_limit is not None:
        funcs = {name: limits.limited(name, f, time_limit, EXIT_INVALID) for name, f in funcs.items()}
    n = len(completions)
    ids = completion_ids if completion_ids is not None else [[] for _ in completions]
    columns = [k for k in rows[0] if k not in ("prompt", "completion", "completion_ids")] if rows else []
    state = _trainer_state() if not light or any(":" in name for name in funcs) else None
    # conversational prompts: TRL passes each completion as a list of messages
    conversational = bool(rows) and isinstance(rows[0].get("prompt"), list)

    def call(func: Any, idx: list[int]) -> Any:
        kwargs = {k: [rows[i][k] for i in idx] for k in columns}
        out = func(
            prompts=[rows[i]["prompt"] for i in idx],
            completions=[[{"role": "assistant", "content": completions[i]}] if conversational else completions[i]
                         for i in idx],
            completion_ids=[ids[i] for i in idx],
            trainer_state=state, log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None,
            **kwargs,
        )
        return asyncio.run(out) if inspect.iscoroutine(out) else out

    def attempt(func: Any, idx: list[int]) -> tuple[str | None, Any]:
        """(what is wrong or None, the scores): one call, as TRL makes one per batch (an LLM judge costs)."""
        try:
            out = call(func, idx)
        except limits.RewardTimeLimit as e:  # no search for the culprit: each try would take the limit again
            raise SettingsError(f"{e} ({found_by})" if found_by else str(e)) from None
        except Exception as e:  # any error of user code is the finding, reported below
            return f"raised {type(e).__name__}: {e}", None
        try:
            got = len(out)
        except TypeError:
            return f"returned {type(out).__name__}, not a list of floats", None
        if got != len(idx):
            return f"returned {got} scores for {len(idx)} completions (one per completion is required)", None
        bad = [v for v in out if not is_score(v)]
        if bad:
            return f"returned a non-number {bad[0]!r} ({type(bad[0]).__name__})", None
        if any(v is not None and math.isinf(float(v)) for v in out):
            # NaN is TRL's "not scored" (as None); an infinite score makes the group's advantages and the loss NaN
            return "returned an infinite score (inf); NaN or None mark a completion not scored", None
        return None, out

    def problem(func: Any, idx: list[int]) -> str | None:
        return attempt(func, idx)[0]

    scores: dict[str, list[float]] = {}
    failed: list[str] = []  # every reward that fails, in one message (one `check` lists them all)
    for name, func in funcs.items():
        batch_problem, out = attempt(func, list(range(n)))
        if batch_problem is None:
            scores[name] = [math.nan if v is None else float(v) for v in out]
            continue
        # Find the completion that breaks it: one at a time, the first that fails on its own.
        culprit = next((i for i in range(n) if problem(func, [i]) is not None), None)
        if culprit is None:
            detail = f"on a batch of {n} completions (each one alone is fine); the first was {shown(completions[0])}"
        elif culprit == 0 and not batch_problem.startswith("raised") and problem(func, [0]) == batch_problem:
            # what it returns is wrong whatever it scores (trial: "on completion #0" read as a fault of that one)
            detail = f"for a batch of {n} completions and for one alone alike (the first was {shown(completions[0])})"
        else:
            alone = problem(func, [culprit])
            detail = f"on completion #{culprit}{'' if alone == batch_problem else ' ' + str(alone)}: {shown(completions[culprit])}"
            if "answer" in rows[culprit]:
                detail += f" (reference answer {rows[culprit]['answer']!r})"
        failed.append(
            f"reward {name!r} {batch_problem}, {detail}{f' ({found_by})' if found_by else ''}"
            f"{_kwargs_hint(func) if batch_problem.startswith('raised TypeError') else ''}"
            f"{_messages_hint(name) if not conversational and batch_problem.startswith('raised') else ''}"
            f"{_text_column_hint(batch_problem, rows, columns)}. A reward must "
            f"return one float (or None) per completion and never raise on odd model output; fix the function or "
            f"its arguments in rewards.{name}, or remove it from rewards [GRPO_REWARDS]"
        )
    if failed:
        raise SettingsError("\n".join(failed))
    return scores


def is_score(value: Any) -> bool:
    """Whether TRL takes `value` as one reward score: it builds `torch.tensor(scores, dtype=float32)` with
    None as NaN, which takes any real number: Python's (bool included), numpy's scalars (`np.float32`,
    `np.int64`, `np.bool_`), `Decimal`, a 0-d real torch tensor. Not text, complex numbers, arrays or lists."""
    if value is None or isinstance(value, (numbers.Real, decimal.Decimal)):
        return True
    kind = getattr(getattr(value, "dtype", None), "kind", None)  # numpy's dtype.kind ('b', 'i', 'u', 'f')
    if kind is not None and type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0 \
            and type(value).__name__ != "ndarray":
        return kind in "biuf"
    if type(value).__module__.startswith("torch") and getattr(value, "ndim", 1) == 0:
        return not (value.is_complex() if hasattr(value, "is_complex") else True)
    return False


# TRL's rewards that read each completion as chat messages (`completion[0]["content"]`, trl 1.15)
MESSAGE_REWARDS = ("accuracy_reward", "reasoning_accuracy_reward", "think_format_reward")


def _messages_hint(name: str) -> str:
    """Why TRL's message-reading rewards fail on plain-text prompts, and what to set."""
    if name not in MESSAGE_REWARDS:
        return ""
    return (f" ({name} is TRL's and reads each completion as chat messages, completion[0]['content'], but the prompts "
            "here are plain text (data.prompt_format=plain, or a model without a chat template), so the completions "
            "are text: use the job's correctness/format rewards, or set GRPO_DATA__PROMPT_FORMAT=chat with a model "
            "that has a chat template)")


def _text_column_hint(problem: str, rows: list[dict], columns: list[str]) -> str:
    """Why arithmetic on a dataset column fails: the column holds text (a CSV's every column does, and a
    JSON file's a quoted number), and the reward took it for a number."""
    # Python's words for arithmetic on a str: `/ ... 'str'`, `can't multiply sequence by non-int`, `can only
    # concatenate str`, `'>' not supported between instances of 'str' and 'int'`
    if not problem.startswith("raised TypeError") or not any(w in problem for w in ("'str'", "sequence", "concatenate str")):
        return ""
    text = [c for c in columns if rows and isinstance(rows[0].get(c), str)]
    numeric = [c for c in text if _reads_as_number(rows[0][c])]  # the columns a reward would compute with
    named = numeric or text
    if not named:
        return ""
    return (f". The dataset column{'s' if len(named) > 1 else ''} {', '.join(named)} reach{'' if len(named) > 1 else 'es'} "
            f"the reward as text (every column of a CSV file does; e.g. {named[0]}={rows[0][named[0]]!r}): convert in "
            f"the reward, e.g. float({named[0]})")


def _reads_as_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def _kwargs_hint(func: Any) -> str:
    """Why a reward without `**kwargs` fails in TRL, which passes more keyword arguments than it names."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature: nothing to say
        return ""
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return ""
    return (". TRL calls every reward with the keyword arguments prompts, completions, completion_ids, "
            "trainer_state, log_extra, log_metric and every dataset column: end its parameters with **kwargs")


DRY_ROWS = 3  # data rows the data check calls every reward on, two synthetic completions each


def dry_call(rewards: Mapping[str, Any], rows: list[dict], chat: Any = None,
             time_limit: float | None = None) -> dict[str, list[float]]:
    """Call every built reward (`rewards.build_all`) once before any model is loaded, through
    `check_rewards` (TRL's keyword arguments and shapes): on the first `DRY_ROWS` prepared rows, each
    as TRL groups them with two synthetic completions, its reference answer in the recipe's
    reasoning/answer format and an empty one (a model that stops at once); `trainer_state` as
    `check_rewards(light=True)` gives it (`check` imports no torch). Token ids come from the
    model's tokenizer with its eos token when `chat` (`grpo_job.chat.ChatTemplate`) has one, else the
    UTF-8 bytes stand in for them. Returns the scores by reward name; raises SettingsError naming the
    reward and `rewards.<name>` when one raises or returns the wrong number of scores."""
    picked = rows[:DRY_ROWS]
    texts = [t for r in picked
             for t in (f"<reasoning>\nThe answer is {r.get(data.ANSWER, '')}.\n</reasoning>\n<answer>\n"
                       f"{r.get(data.ANSWER, '')}\n</answer>", "")]
    tokenizer = getattr(chat, "tokenizer", None)
    eos = tokenizer.token_to_id(chat.special_tokens["eos_token"]) \
        if tokenizer is not None and "eos_token" in chat.special_tokens else None

    def ids(text: str) -> list[int]:
        if tokenizer is None:
            return list(text.encode())
        return tokenizer.encode(text, add_special_tokens=False).ids + ([eos] if eos is not None else [])

    scores = check_rewards(rewards, [r for r in picked for _ in range(2)], texts, [ids(t) for t in texts],
                           found_by=f"the data check's dry call of every reward, before any model is loaded, on "
                                    f"{len(texts)} synthetic completions of {len(picked)} data rows: the reference "
                                    "answer in the <reasoning>/<answer> format, and an empty one", light=True,
                           time_limit=time_limit)
    for name, got in scores.items():
        # the job's rewards that compare with the row's reference: its own answer scoring 0 means a row no model
        # can earn (a code task's reference solution failing its tests, a reference the schema refuses)
        if _underlying(rewards[name])[0] in _REFERENCE_REWARDS:
            zero = [picked[i // 2] for i in range(0, len(got), 2)
                    if got[i] == 0 and str(picked[i // 2].get(data.ANSWER, "")).strip()]  # none given: none to try
            if zero:
                base, arguments = _underlying(rewards[name])
                error = R.code.first_error(texts[picked.index(zero[0]) * 2], zero[0], **arguments) \
                    if base is R.code_reward else None
                log.warning("rewards: %r scored 0 on the reference answer itself (written as a completion) in %d of %d "
                            "rows tried, e.g. %s%s: a model that answers as the reference does earns nothing there; check "
                            "that those rows' reference answers pass their own tests or schema", name, len(zero),
                            len(picked), data.excerpt(zero[0], ("prompt",)), f" ({error})" if error else "")
        if _underlying(rewards[name])[0] is R.code_reward:  # rows spread over the data, not only the first
            _warn_if_tests_pass_an_empty_program(name, rewards[name], rows[::max(1, -(-len(rows) // PROBE_ROWS))])
    return scores


PROBE_ROWS = 32  # rows whose tests a program that does nothing, and the reference, are run against (~2 s, 2 cores)


def _warn_if_tests_pass_an_empty_program(name: str, reward: Any, rows: list[dict]) -> None:
    """Tests that a program doing nothing passes score every completion with a code block (trial: pytest-style
    tests were never called): the code reward run on `pass` for these rows, warned of when it earns, a SettingsError
    when it earns on every row; and on the rows' reference answers, a SettingsError when every one scores 0."""
    columns = {k: [r.get(k) for r in rows] * 2 for k in dict.fromkeys(k for r in rows for k in r)}
    references = [f"<answer>\n{r.get(data.ANSWER, '')}\n</answer>" for r in rows]
    both = reward(["```python\npass\n```"] * len(rows) + references, **columns)
    got, solved = both[:len(rows)], both[len(rows):]
    given = [i for i, row in enumerate(rows) if str(row.get(data.ANSWER, "")).strip()]
    if given and not any(solved[i] for i in given):  # trial Z: a warning on the dry call's 3 rows, and exit 0
        error = R.code.first_error(references[given[0]], rows[given[0]], **_underlying(reward)[1])
        raise SettingsError(f"reward {name!r} scored 0 on the reference answer itself (written as a completion) on "
                            f"every one of the {len(given)} rows tried, e.g. {data.excerpt(rows[given[0]], ('prompt',))}"
                            f"{f' ({error})' if error else ''}: no completion can earn it; check that the answer column "
                            "holds the reference solutions and that they pass their own tests in the sandbox (the "
                            "standard library only)")
    if not (earned := [(row, score) for row, score in zip(rows, got, strict=True) if score]):
        return
    said = (f"{name!r} gave a program that does nothing (`pass`) {earned[0][1]:.2f} on {len(earned)} of {len(rows)} "
            f"rows tried, e.g. {data.excerpt(earned[0][0], ('prompt',))}: those tests pass without the program, so "
            "every completion with a code block earns there. Tests must call what they test: test code that only "
            "defines a checker (HumanEval's `def check(candidate)`) needs the call too (`check(f)`)")
    if len(earned) == len(rows):  # trial Y: every row's tests, and the run trained on them to exit 0
        raise SettingsError(f"reward {said}; with no row that tells a right program from none, training learns nothing "
                            "from this reward: fix the tests column")
    log.warning("rewards: %s", said)


_REFERENCE_REWARDS = (R.code_reward, R.json_schema_reward)  # correctness: check_references reads every row


def _trainer_state() -> Any:
    """What TRL passes as `trainer_state` at the first step: a fresh TrainerState (step 0)."""
    from transformers import TrainerState

    return TrainerState()


def check_reward_rows(rewards: Mapping[str, Any], rows: list[dict], where: str = "the data") -> None:
    """Every row a reward of the job reads columns of (`rewards.ROW_CHECKS`: the code reward's tests, the
    json_schema reward's schema and reference) is one it can read: the dry call tries a few rows, and one row it
    cannot read stops training at the first batch that holds it (exit 1, retried in vain). `rewards`: the built
    rewards by name. Raises SettingsError naming each such reward, how many rows, and the first row."""
    found = []
    for name, func in rewards.items():
        base, arguments = _underlying(func)
        check = R.ROW_CHECKS.get(base)
        bad = check(rows, **arguments) if check is not None else []
        off = R.ROW_NOTES[base](rows, **arguments) if not bad and base in R.ROW_NOTES else []
        i, what = off[0] if off else (0, "")
        if off and len(off) == len(rows):  # trial X: a warning, and training would have taught against every reference
            found.append(f"reward {name!r}: on every one of the {len(rows)} rows of {where} no completion can earn the "
                         f"whole score: e.g. {what}, in row {data.excerpt(rows[i], ('prompt',))}. The reward's "
                         "arguments and the answers disagree: fix the schema or the answer column")
        elif off:
            log.warning("reward %r: on %d of %d rows of %s no completion can earn the whole score: e.g. %s, in row %s; "
                        "fix those rows or the reward's arguments", name, len(off), len(rows), where, what,
                        data.excerpt(rows[i], ("prompt",)))
        if bad and len(bad) == len(rows) and (absent := _absent_column(name, base, arguments, rows, where)):
            found.append(absent)  # a setting to fix, not the rows (trial: `tests_column: unit_test`)
        elif bad:
            i, what = bad[0]
            found.append(f"reward {name!r} cannot read {len(bad)} of {len(rows)} rows of {where}: e.g. {what}, in row "
                         f"{data.excerpt(rows[i], ('prompt',))}")
    if found:
        rows_to_fix = any(" cannot read " in f for f in found)
        raise SettingsError("; ".join(found) + (". Training would stop at the first batch holding such a row: fix or "
                                                "remove those rows in the data (GRPO_DATA__PATH), or point the reward "
                                                "at the right column" if rows_to_fix else ""))


def _absent_column(name: str, func: Any, arguments: dict[str, Any], rows: list[dict], where: str) -> str | None:
    """What is wrong when the column a reward reads (`rewards.ROW_COLUMNS`) is in no row; else None."""
    import inspect

    arg = R.ROW_COLUMNS.get(func)
    if arg is None or arguments.get(R.ROW_COLUMN_STAND_INS.get(func, "")) is not None:
        return None
    column = arguments.get(arg, inspect.signature(func).parameters[arg].default)
    if any(column in r for r in rows):
        return None
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return (f"reward {name!r} reads column {column!r} ({arg}), which no row of {where} has; it has {columns}"
            f"{data.close_columns([column], columns)}: set rewards.{name}.{arg}"
            # its variable too, for a deployment set by variables alone (trial Y)
            f"{f' [GRPO_REWARDS__{name.upper()}__{arg.upper()}]' if name.isidentifier() else ''} to the column that holds it"
            # trial Z: a variable that replaced the file's entry had dropped its schema argument, and this named only
            # the column
            + (f", or give the reward's {stand_in} argument (one for every row)"
               if (stand_in := R.ROW_COLUMN_STAND_INS.get(func)) else ""))


def _built_by_name(name: str) -> Any:
    """A reward by name as `build` makes it with no arguments: a `get_*` factory's product (its parameters are
    no columns), TRL's math rewards reading `answer` (`with_solution`); a factory that needs arguments, left out
    (its entry's check names them)."""
    try:
        return R.build(name)
    except TypeError:
        return lambda completions, **kwargs: None


def _underlying(func: Any) -> tuple[Any, dict[str, Any]]:
    """A built reward's function and the arguments its entry bound: through `functools.partial` (`build`) and
    `__wrapped__` (the time limit's wrapper)."""
    arguments: dict[str, Any] = {}
    while True:
        if isinstance(func, functools.partial):
            arguments = {**func.keywords, **arguments}
            func = func.func
        elif hasattr(func, "__wrapped__"):
            func = func.__wrapped__
        else:
            return func, arguments


def check_reward_columns(rewards: Mapping[str, Any] | list[str], columns: list[str]) -> None:
    """Every keyword a reward requires (a parameter without a default, other than TRL's own arguments) is a
    column of the prepared rows. `rewards`: the built rewards by name (`rewards.build_all`: a factory's
    product, a function with its entry's arguments bound), or names to resolve. Raises SettingsError
    naming the reward, the column and the columns there are."""
    import inspect

    trl_args = set(data.TRL_REWARD_ARGS) | {"prompts"}
    built = rewards if isinstance(rewards, Mapping) else {name: _built_by_name(name) for name in rewards}
    found = []  # every reward short of a column, in one message
    for name, func in built.items():
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):  # a builtin or C callable without a signature: the preflight calls it
            continue
        needed = [p.name for p in params if p.default is inspect.Parameter.empty
                  and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in trl_args]
        missing = [c for c in needed if c not in columns]
        if missing:
            # a reward of the user's own reading TRL's `solution`, which the prepared rows call `answer` (TRL's own
            # math rewards get it from `answer`: rewards.with_solution)
            trl_solution = missing == ["solution"] and data.ANSWER in columns
            found.append(f"reward {name!r} needs the dataset column(s) {missing}" + (
                " (TRL's name for the reference solution; the job passes the reference answer as `answer`: name the "
                "reward's parameter `answer`, or give the data a `solution` column too)"
                if trl_solution else ""))
    if found:
        raise SettingsError(
            f"{'; '.join(found)}; the prepared rows have {columns}. TRL passes each column to the rewards under its "
            "own name (the reference answer as `answer`). Point data.path [GRPO_DATA__PATH] at data with those columns, or fix "
            "the reward's parameter names")
