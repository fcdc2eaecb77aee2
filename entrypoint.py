"""Container entry point: `python entrypoint.py run|check`. See job/cli.py; exit codes in job/errors.py."""

import sys

from job.cli import main

if __name__ == "__main__":
    sys.exit(main())
