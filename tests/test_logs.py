"""JSON log mode as a container runs it: every line a record, progress bars as one record each, and
no library switched into a state it does not expect (TQDM_DISABLE broke vLLM's generate)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                          env={**{k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}, **env}, timeout=120)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]  # raises on any line that is not JSON


def test_json_mode_leaves_tqdm_enabled_and_logs_a_bar_as_one_record():
    """vLLM 0.26 divides by a bar's elapsed time, which a disabled tqdm reports as 0: the ZeroDivisionError
    that crashed every evaluation in a container. The bar must stay enabled and still be one record."""
    r = run_python("""
        import time
        from grpo_job import logs
        logs.setup("json"); logs.route_streams()
        from tqdm import tqdm
        bar = tqdm(total=3, desc="Processed prompts", mininterval=0)
        for _ in range(3):
            time.sleep(0.01); bar.update(1)
        assert not bar.disable and bar.format_dict["elapsed"] > 0
        rate = 3 / bar.format_dict["elapsed"]   # what vLLM computes
        bar.close()
        print("after the bar")
        logs.restore_streams()
    """)
    assert r.returncode == 0, r.stderr
    recs = json_lines(r.stderr)
    bars = [x for x in recs if "Processed prompts" in x["msg"]]
    assert len(bars) == 1 and "3/3" in bars[0]["msg"], recs
    assert any(x["msg"] == "after the bar" and x["logger"] == "stdout" for x in recs)
    assert "TQDM_DISABLE" not in json.dumps(recs)


@pytest.mark.parametrize("written, records", [
    ("a\nb\n", ["a", "b"]),
    ("\r 10%\r 50%\r100%\n", ["100%"]),            # a bar redrawn in place: its last state
    ("windows line\r\n", ["windows line"]),       # CRLF is a line end, not a redraw
    ("part", []),                                 # a partial line waits for its newline...
    ("\r\r\n", []),                               # a bar cleared on close (leave=False) leaves nothing
])
def test_line_to_log_reads_lines_and_redraws(written, records):
    import logging

    from grpo_job import logs

    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger = logging.getLogger("test-line-to-log")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    stream = logs.LineToLog("test-line-to-log", logging.INFO, sys.__stderr__)
    stream.write(written)
    stream.flush()
    assert seen == records
    stream.close_line()  # ...until the stream is closed
    assert seen == records + (["part"] if written == "part" else [])


def test_a_progress_bar_on_stderr_is_info_not_a_warning():
    """stderr lines are warnings, but a bar is progress (new-user trial: every bar was a WARNING record)."""
    import logging

    from grpo_job import logs

    levels = []

    class Keep(logging.Handler):
        def emit(self, record):
            levels.append((record.getMessage(), record.levelno))

    logger = logging.getLogger("test-bar-level")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    stream = logs.LineToLog("test-bar-level", logging.WARNING, sys.__stderr__)
    stream.write("\r 10%\r100%|####| 3/3\nUserWarning: something\n\r 5/9")
    stream.close_line()
    assert levels == [("100%|####| 3/3", logging.INFO), ("UserWarning: something", logging.WARNING), (" 5/9", logging.INFO)]


def test_a_child_process_output_becomes_records():
    r = run_python("""
        import sys
        from grpo_job import logs
        logs.setup("json"); logs.route_streams()
        child = "import sys; print('from the child'); sys.stderr.write('\\\\r 1/2\\\\r 2/2\\\\n'); sys.exit(3)"
        rc = logs.run_logged([sys.executable, "-c", child], logger="evaluate.vllm")
        print("rc", rc)
        logs.restore_streams()
    """)
    assert r.returncode == 0, r.stderr
    recs = json_lines(r.stderr)
    child = [x["msg"].strip() for x in recs if x["logger"] == "evaluate.vllm"]
    assert child == ["from the child", "2/2"], recs
    assert any(x["msg"] == "rc 3" for x in recs)


def test_text_mode_passes_a_child_through():
    r = run_python("""
        import sys
        from grpo_job import logs
        logs.setup("text")
        sys.exit(logs.run_logged([sys.executable, "-c", "print('plain child line')"]))
    """)
    assert r.returncode == 0 and "plain child line" in r.stderr and "{" not in r.stderr


def test_a_where_note_is_given_once_per_run():
    """Trial X: two warnings naming GRPO_DATA__TASK each carried the same `(where: ...)` line."""
    import logging

    from grpo_job import logs

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("test-where-once")
    logger.addHandler(handler)
    handler.addFilter(logs.NoteWarnings(lambda m: f"{m}\n(where: {m.split()[-1]} is data.task)" if "GRPO_" in m else m))
    try:
        for message in ("a: set GRPO_DATA__TASK", "b: set GRPO_DATA__TASK", "c: set GRPO_DATA__PATH"):
            logger.warning(message)
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == [
        "a: set GRPO_DATA__TASK\n(where: GRPO_DATA__TASK is data.task)", "b: set GRPO_DATA__TASK",
        "c: set GRPO_DATA__PATH\n(where: GRPO_DATA__PATH is data.task)"]
