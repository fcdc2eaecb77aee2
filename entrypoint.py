"""Container entry point: `python entrypoint.py run|check`. See grpo_job/cli.py; exit codes in grpo_job/errors.py."""

import sys

from grpo_job.cli import main

if __name__ == "__main__":
    sys.exit(main())
