"""The scheduler and one worker in background threads of ``bulwark serve`` (started by
app/composition.py, which hands them what they run)."""

from __future__ import annotations

import logging
import threading

from app.jobs.scheduler import Scheduler
from app.jobs.worker import Worker

log = logging.getLogger(__name__)


class BackgroundJobs:
    """Handle on the running threads; :meth:`stop` ends them and waits."""

    def __init__(self, scheduler: Scheduler | None, worker: Worker | None):
        self.scheduler = scheduler
        self.worker = worker
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def _spawn(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def start(self, scheduler_interval: float) -> BackgroundJobs:
        if self.scheduler is not None:
            self._spawn(
                "bulwark-scheduler", self.scheduler.run_forever, self.stop_event, scheduler_interval
            )
        if self.worker is not None:
            self._spawn("bulwark-worker", self.worker.run_forever, self.stop_event)
        return self

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop ticking and claiming; running jobs get the worker's grace, then go back to
        the queue (or, if they do not stop in time, are taken over when the lease runs out)."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s did not stop within %.0f s", thread.name, timeout)
