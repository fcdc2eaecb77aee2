"""Logging: readable text on a terminal, one JSON object per line for log collectors, and secret
values scrubbed from every record whatever the format.

In JSON format every line the process writes through Python is one JSON object: `warnings` go
through logging (`logging.captureWarnings`), and `sys.stdout` / `sys.stderr` are replaced by streams
that turn each line a library prints into a record of the logger `stdout` / `stderr`. A progress bar
(tqdm redraws its line with carriage returns) becomes one record, its final state. The output of a
child process the job starts goes through `run_logged`, so it is records too.

Progress bars are never switched off through the environment (`TQDM_DISABLE`): a disabled tqdm
reports an elapsed time of 0, and vLLM 0.26 divides by it (`_run_engine`: ZeroDivisionError), so every
evaluation in JSON mode crashed. Only libraries' own switches are used (HF_HUB_DISABLE_PROGRESS_BARS,
TRL's `disable_tqdm`, vLLM's `use_tqdm=False`)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

# Standard variables that hold secrets; their values are masked wherever they appear in a message.
SECRET_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "WANDB_API_KEY")
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class RedactSecrets(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.secrets = [v for k in SECRET_ENV_VARS if (v := os.environ.get(k)) and len(v) >= 6]

    def _scrub(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self._scrub(record.getMessage())
            record.args = ()
            for k, v in list(record.__dict__.items()):
                if k not in _RESERVED and isinstance(v, str):
                    setattr(record, k, self._scrub(v))
        return True


class NoteWarnings(logging.Filter):
    """Gives each warning record that names a GRPO_* variable `note(message)` instead of its message (cli:
    the `(where: ...)` line that says which setting a variable is, for a run set up by a file or flags)."""

    def __init__(self, note: Callable[[str], str]) -> None:
        super().__init__()
        self.note = note
        self.given: set[str] = set()  # each `(where: ...)` once (trial X: one under each of two warnings)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and "GRPO_" in (message := record.getMessage()):
            noted = self.note(message)
            added = noted[len(message):] if noted.startswith(message) else noted
            if noted != message and added not in self.given:
                self.given.add(added)
                record.msg, record.args = noted, ()
        return True


def note_warnings(note: Callable[[str], str]) -> Callable[[], None]:
    """Install NoteWarnings(note) on the root logger's handlers (after `setup`, which replaces them); returns
    what removes it again (the note belongs to one run's settings sources)."""
    noting, handlers = NoteWarnings(note), list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(noting)

    def remove() -> None:
        for handler in handlers:
            handler.removeFilter(noting)
    return remove


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in _RESERVED}
        if extra:
            base += "  " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in extra.items())
        return base


def resolve_format(fmt: str) -> str:
    if fmt == "auto":
        return "text" if sys.stderr.isatty() else "json"
    return fmt


class LineToLog:
    """A text stream that logs each complete line it is given as one record of `logger` (a library's
    `print`, a traceback written to stderr) at `level`; a progress bar (a line redrawn after a carriage
    return) at INFO, whatever the stream: it is progress, not a warning to alert on. Partial lines wait for
    their newline or `flush`."""

    def __init__(self, logger: str, level: int, original) -> None:
        self._log = logging.getLogger(logger)
        self._level = level
        self._buf = ""
        self._busy = False  # a write from inside logging (its own error report) goes to the original
        self.original = original

    def write(self, text: str) -> int:
        if self._busy:
            return self.original.write(text)
        self._buf += text.replace("\r\n", "\n")
        *lines, self._buf = self._buf.split("\n")
        self._emit(lines)
        return len(text)

    def _emit(self, lines: list[str]) -> None:
        self._busy = True
        try:
            for line in lines:
                # a progress bar redraws its line after a carriage return: a line is what the last redraw left
                shown = line.rsplit("\r", 1)[-1]
                if shown.strip():
                    self._log.log(logging.INFO if "\r" in line else self._level, "%s", shown.rstrip())
        finally:
            self._busy = False

    def flush(self) -> None:
        # a partial line waits for its newline: a redrawn progress bar would otherwise be one record per flush
        self.original.flush()

    def close_line(self) -> None:
        """Emit what is left of a partial line (the end of a child's output, a bar left without newline)."""
        if self._buf:
            lines, self._buf = [self._buf], ""
            self._emit(lines)

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:  # subprocesses given sys.stderr inherit the real descriptor
        return self.original.fileno()

    @property
    def encoding(self) -> str:
        return self.original.encoding


def restore_streams() -> None:
    """Undo `setup`'s stream replacement (for callers that go on after `cli.main`, such as tests)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, LineToLog):
            stream.close_line()
            setattr(sys, name, stream.original)
    logging.captureWarnings(False)


def setup(fmt: str) -> str:
    """Configure the root logger; returns the format in use (`text` or `json`)."""
    fmt = resolve_format(fmt)
    if fmt == "json":
        # progress bars are terminal furniture: in a log collector they are noise. Only the Hub client's
        # own switch: TQDM_DISABLE would break vLLM (see the module docstring).
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    err = sys.stderr.original if isinstance(sys.stderr, LineToLog) else sys.stderr
    handler = logging.StreamHandler(err)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # Libraries log at INFO far more than a job log wants.
    for noisy in ("httpx", "urllib3", "botocore", "boto3", "s3transfer", "filelock", "datasets", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return fmt


def route_streams() -> None:
    """JSON format: warnings and every line printed to sys.stdout / sys.stderr become log records."""
    logging.captureWarnings(True)
    if not isinstance(sys.stdout, LineToLog):
        sys.stdout = LineToLog("stdout", logging.INFO, sys.stdout)
    if not isinstance(sys.stderr, LineToLog):
        sys.stderr = LineToLog("stderr", logging.WARNING, sys.stderr)


def run_logged(cmd: list[str], env: dict[str, str] | None = None, logger: str = "child") -> int:
    """Run `cmd` and return its exit code. In JSON format (stderr routed by `route_streams`) its stdout
    and stderr, and those of its own children, are read through a pipe and logged line by line as
    records of `logger` (a progress bar as one record); otherwise they go to this process' stderr as
    they come."""
    import subprocess

    if not isinstance(sys.stderr, LineToLog):
        return subprocess.run(cmd, env=env, stdout=sys.stderr.fileno()).returncode
    sink = LineToLog(logger, logging.INFO, sys.stderr.original)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    with proc.stdout:
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            sink.write(chunk.decode("utf-8", errors="replace"))
    sink.close_line()
    return proc.wait()
