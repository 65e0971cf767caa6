"""A real proxy process that reaches the vCenter and the array, for the test that kills one
with SIGKILL in the middle of an array-snapshot backup.

Run as ``python -m tests.arrays.array_worker WORKER_NAME`` with the service's settings in the
environment; it claims one job and runs it, with a short lease so that another worker can take
the job over soon after this process dies.
"""

from __future__ import annotations

import sys
import time

from app.composition import load_handlers
from app.config import Settings
from app.jobs import Worker
from app.state import Runtime


def main() -> None:
    load_handlers()
    worker = Worker(
        Runtime.from_settings(Settings()),
        sys.argv[1],
        ["vcenter", "array"],
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
