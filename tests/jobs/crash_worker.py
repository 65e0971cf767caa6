"""A worker process the takeover test kills with SIGKILL mid-job.

Run as ``python -m tests.jobs.crash_worker DATABASE_URL WORKER_NAME``: it claims one job,
records a leftover, then works forever (until killed).
"""

from __future__ import annotations

import sys
import time

from app.db.session import Database
from app.domain.jobs import JobKind
from app.jobs.handlers import HandlerRegistry
from app.jobs.worker import Worker

LEFTOVER = {"type": "vm_snapshot", "vm": "vm-42", "moref": "snapshot-crash"}


def run(ctx):
    ctx.step("snapshot")
    ctx.add_leftover(LEFTOVER)
    ctx.step("copy")
    while True:
        time.sleep(0.1)


def main() -> None:
    url, name = sys.argv[1], sys.argv[2]
    registry = HandlerRegistry()
    registry.register(JobKind.BACKUP, run)
    worker = Worker(
        Database(url),
        name,
        ["vcenter"],
        registry=registry,
        lease_seconds=1.0,
        heartbeat_interval=0.2,
        cancel_poll_interval=0.05,
    )
    while worker.run_once() is None:
        time.sleep(0.05)


if __name__ == "__main__":
    main()
