"""A real worker process, for the test that kills one with SIGKILL in the middle of a backup.

Run as ``python -m tests.protection.lab_worker WORKER_NAME`` with the service's settings in
the environment (``BULWARK_DATABASE_URL``, ``BULWARK_SECRET_KEY``, ``BULWARK_DATA_DIR``): it
loads the product's handlers, claims one job and runs it, with a short lease so that another
worker can take the job over soon after this process dies.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from app.composition import load_handlers
from app.config import Settings
from app.jobs import Worker
from app.state import Runtime


def die_after(point: str) -> None:
    """SIGKILL this process right after ``point`` of a backup (``TEST_DIE_AFTER``): after the
    catalog write, after retention on primary storage, or just before the success is
    recorded. A test's own hook, in the test's worker program."""
    from app.jobs.engine import JobEngine
    from app.protection.catalog import retention
    from app.protection.handlers import backup

    def killing(fn):
        def wrapper(*args, **kwargs):
            result = fn(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
            return result

        return wrapper

    if point == "catalog":
        backup._catalog = killing(backup._catalog)
    elif point == "retention":
        retention.retain_on_primary = killing(retention.retain_on_primary)
    elif point == "success":
        real = JobEngine.succeed

        def dies_first(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
            return real(self, *args, **kwargs)

        JobEngine.succeed = dies_first
    else:
        raise SystemExit(f"unknown TEST_DIE_AFTER {point!r}")


def main() -> None:
    name = sys.argv[1]
    load_handlers()
    if os.environ.get("TEST_DIE_AFTER"):
        die_after(os.environ["TEST_DIE_AFTER"])
    worker = Worker(
        Runtime.from_settings(Settings()),
        name,
        ["vcenter"],
        lease_seconds=1.5,
        heartbeat_interval=0.2,
        cancel_poll_interval=0.05,
        retry_base_s=0.0,
    )
    print("ready", flush=True)
    while worker.run_once() is None:
        time.sleep(0.05)


if __name__ == "__main__":
    main()
