"""A real worker process, for the test that kills one with SIGKILL in the middle of a backup.

Run as ``python -m tests.protection.lab_worker WORKER_NAME`` with the service's settings in
the environment (``BULWARK_DATABASE_URL``, ``BULWARK_SECRET_KEY``, ``BULWARK_DATA_DIR``): it
loads the product's handlers, claims one job and runs it, with a short lease so that another
worker can take the job over soon after this process dies.
"""

from __future__ import annotations

import sys
import time

from app.composition import load_handlers
from app.config import Settings
from app.jobs import Worker
from app.state import Runtime


def main() -> None:
    name = sys.argv[1]
    load_handlers()
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
