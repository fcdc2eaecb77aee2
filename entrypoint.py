"""Container entry point: `python entrypoint.py run|check`. See grpo_job/cli.py; exit codes in grpo_job/errors.py."""

import os
import signal
import sys

from grpo_job.errors import EXIT_RETRY  # a module of constants: imports nothing

# Until the run takes SIGTERM over (grpo_job/stopping.py), a SIGTERM ends the process with 75 (stopped
# early, resumable), not Python's default death by signal (143, a failure to Kubernetes): nothing has been
# written yet that a stop could cut short. The imports and the checks before the first stage take seconds.
signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(EXIT_RETRY))

from grpo_job.cli import main  # noqa: E402  (after the handler: importing takes a while)

if __name__ == "__main__":
    sys.exit(main())
