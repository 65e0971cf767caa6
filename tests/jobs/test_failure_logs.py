"""How a failed attempt shows in the service's log: one line for what an outside system
refused, a traceback only for what looks like a bug; JSON lines on request."""

from __future__ import annotations

import io
import json
import logging

from app import logs
from app.domain.jobs import JobKind
from tests.jobs.conftest import add_job, make_worker


def _failures(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "attempt 1 failed" in r.getMessage()]


def test_an_expected_failure_is_one_line_and_a_bug_keeps_its_traceback(db, registry, caplog):
    def refused(ctx):
        raise ConnectionRefusedError("array-a refused the snapshot (port 8443)")

    def bug(ctx):
        return {}["missing"]

    registry.register(JobKind.VERIFY, refused)
    registry.register(JobKind.EXPIRE, bug)
    first = add_job(db, JobKind.VERIFY)
    second = add_job(db, JobKind.EXPIRE)
    worker = make_worker(db, "w1", registry)
    with caplog.at_level(logging.WARNING, logger="app.jobs.worker"):
        assert worker.run_once() == first
        assert worker.run_once() == second
    expected, programming = _failures(caplog)
    assert f"job {first} (verify) attempt 1 failed: ConnectionRefusedError: array-a refused" in (
        expected.getMessage()
    )
    assert not expected.exc_info
    assert "KeyError" in programming.getMessage() and programming.exc_info is not None


def test_json_logs_are_one_object_a_line(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(logs.sys, "stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("INFO", "json")
        logging.getLogger("app.test").warning("job %s failed", 7, extra={"job_id": 7})
        logging.getLogger("app.test").debug("not shown")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "WARNING" and record["logger"] == "app.test"
    assert record["message"] == "job 7 failed" and record["job_id"] == 7 and record["time"]
