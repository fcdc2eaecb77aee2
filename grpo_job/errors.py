"""Exit codes and the exceptions that map to them.

The exit code is the job's contract with whoever restarts it (Kubernetes' podFailurePolicy, a CI
workflow, a shell loop). Keep these numbers stable: k8s/ and .github/ refer to them.

| code | meaning                                                      | retry? |
|------|--------------------------------------------------------------|--------|
| 0    | every stage finished                                         | no     |
| 1    | any other failure (a bug, a crash, a lost store or one that does not answer, the run held by another process) | yes, within the backoff budget |
| 2    | invalid settings or input (S3 answered no: no bucket, no access, no credentials): fix the configuration | never  |
| 3    | training stopped by a health guard (no learning signal, NaN; a checkpoint was saved), or the adapter never changed (stopped before merge/publish) | no: change the recipe |
| 4    | out of memory after training made progress (a later step or stage); checkpoints and markers are kept | yes, within the backoff budget: a fresh process may succeed |
| 75   | stopped early after saving a checkpoint (SIGTERM, deadline)  | yes, it resumes where it stopped |
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2
EXIT_UNHEALTHY = 3
EXIT_OOM_LATER = 4
EXIT_RETRY = 75  # EX_TEMPFAIL from sysexits.h: "try again later"

MEANING = {
    EXIT_OK: "every stage finished",
    EXIT_FAILURE: "failed (a bug, a crash, a lost store, the run held by another process); a retry may help",
    EXIT_INVALID: "invalid settings or input: fix the configuration",
    EXIT_UNHEALTHY: "stopped by a health guard or an unchanged adapter: change the recipe",
    EXIT_OOM_LATER: "out of memory after training made progress: a fresh process may succeed",
    EXIT_RETRY: "stopped early; the store keeps the finished stages and complete checkpoints: run again to resume",
}


class JobError(Exception):
    """Base class of the errors the job reports as a message instead of a traceback."""

    exit_code = EXIT_FAILURE


class SettingsError(JobError):
    """The settings or the input they point at are wrong; retrying cannot help."""

    exit_code = EXIT_INVALID


class StoppedEarly(JobError):
    """The run stopped before the end after saving a checkpoint; start it again to resume."""

    exit_code = EXIT_RETRY


class TrainingUnhealthy(JobError):
    """A training health guard stopped the run (a checkpoint was saved first)."""

    exit_code = EXIT_UNHEALTHY


class OutOfMemoryLater(JobError):
    """Out of memory after training made progress (a later step, or a stage after `train`): the same
    settings fitted before, so a fresh process may succeed. (Before the first step it is a SettingsError.)"""

    exit_code = EXIT_OOM_LATER
