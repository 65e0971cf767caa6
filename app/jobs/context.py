"""What a running job handler gets: its job, progress, events, leftovers, cancellation.

A background thread per running job extends the lease, flushes progress and notices a
cancel request or a lost lease; the handler only asks :meth:`JobContext.cancelled`.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.db.session import Database
from app.domain.jobs import EventLevel, JobKind
from app.jobs.engine import ClaimedJob, JobEngine, PendingEvent

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.state import Runtime

log = logging.getLogger(__name__)


class JobCancelled(Exception):  # noqa: N818 - reads as what happened
    """Raised by :meth:`JobContext.check_cancelled`; the job ends ``cancelled``."""


class LeaseLost(Exception):  # noqa: N818
    """This worker no longer owns the job (its lease expired and it was taken over)."""


class PermanentError(Exception):
    """A failure that retrying cannot fix (bad input, missing object): no more attempts.

    ``fix`` is where the operator fixes it (a dashboard path, e.g. the connection's trust
    page), when there is such a place; the failed job carries it in ``result["fix"]``.
    """

    def __init__(self, message: str = "", *, fix: str | None = None):
        super().__init__(message)
        self.fix = fix


def is_permanent(exc: BaseException) -> bool:
    """True for failures another attempt cannot change: :class:`PermanentError`, and errors
    of adapters and the domain that say so with ``permanent = True`` (a missing object, an
    untrusted or changed certificate, a refused confirmation). Everything else (timeouts,
    connection resets, a busy datastore) is worth another attempt."""
    return isinstance(exc, PermanentError) or bool(getattr(exc, "permanent", False))


@dataclass
class JobResult:
    """What a handler may return; returning None means plain success."""

    partial: bool = False
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class JobContext:
    """Handed to ``run(ctx)`` and ``cleanup(ctx, leftovers)``.

    Attributes: ``job_id``, ``kind``, ``params`` (a copy), ``policy_id``, ``server_id``,
    ``database_id``, ``required_capabilities``, ``attempt``, ``max_attempts``,
    ``worker_name``, ``db`` (the :class:`Database`), ``runtime`` (the :class:`Runtime` when
    the worker was built from one, else None), ``log``.
    """

    def __init__(
        self,
        engine: JobEngine,
        job: ClaimedJob,
        worker_name: str,
        *,
        runtime: Runtime | None = None,
        heartbeat_interval: float = 20.0,
        poll_interval: float = 1.0,
        progress_interval: float = 1.0,
    ):
        self._engine = engine
        self._job = job
        self.job_id = job.id
        self.kind: JobKind = job.kind
        self.params: dict[str, Any] = copy.deepcopy(job.params)
        self.policy_id = job.policy_id
        self.server_id = job.server_id
        self.database_id = job.database_id
        self.required_capabilities = list(job.required_capabilities)
        self.attempt = job.attempt
        self.max_attempts = job.max_attempts
        self.worker_name = worker_name
        self.runtime = runtime
        self.db: Database = engine.db
        self.log = logging.LoggerAdapter(log, {"job_id": job.id})

        self._heartbeat_interval = heartbeat_interval
        self._poll_interval = max(0.01, min(poll_interval, heartbeat_interval))
        self._progress_interval = progress_interval
        self._lock = threading.Lock()
        # Held while pending progress and events are written, so that writes from the job's
        # thread and from the heartbeat thread reach the database in the order they happened.
        self._write_lock = threading.Lock()
        self._leftovers: list[dict[str, Any]] = copy.deepcopy(job.leftovers)
        self._pending: dict[str, Any] = {}
        self._events: list[PendingEvent] = []
        self._last_progress_write = time.monotonic()  # the claim just wrote the job
        self._last_lease_extend = time.monotonic()
        self._step = ""

        self._cancel = threading.Event()
        self._cancel_requested = threading.Event()
        self._cancel_seen = False
        self._lost = threading.Event()
        self._shutdown = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        if job.cancel_requested:
            self._cancel_requested.set()
            self._cancel.set()

    # -- lifecycle (the worker's side) ----------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._heartbeat_loop, name=f"job-{self.job_id}-heartbeat", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop the heartbeat thread and write the last progress and events."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._flush_progress(force=True)

    def detach(self) -> tuple[dict[str, Any], list[PendingEvent]]:
        """Stop the heartbeat thread and hand over what is not written yet (progress values,
        events), for the worker to write with the job's final state in one transaction."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._write_lock, self._lock:
            values, self._pending = self._pending, {}
            events, self._events = self._events, []
        return values, events

    def stop_heartbeat(self) -> None:
        """Stop extending the lease, as if this worker had died (for tests and drills)."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def shutdown(self) -> None:
        """The worker is stopping: ask the handler to stop, the job goes back to the queue."""
        self._shutdown.set()
        self._cancel.set()

    def _heartbeat_loop(self) -> None:
        while not self._closed.wait(self._poll_interval):
            try:
                self._tick()
            except Exception:  # the database may blip; the lease has slack for that
                self.log.warning("job %s: heartbeat failed", self.job_id, exc_info=True)

    def _tick(self) -> None:
        self._flush_progress(force=False)
        now = time.monotonic()
        if now - self._last_lease_extend >= self._heartbeat_interval:
            status = self._engine.extend_lease(self.job_id, self.worker_name)
            self._last_lease_extend = now
        else:
            status = self._engine.poll(self.job_id, self.worker_name)
        if not status.owned and not self._closed.is_set():
            if not self._lost.is_set():
                self.log.warning("job %s: lease lost by %s", self.job_id, self.worker_name)
            self._lost.set()
            self._cancel.set()
        if status.cancel_requested:
            self._cancel_requested.set()
            self._cancel.set()

    # -- cancellation ---------------------------------------------------------------------

    def cancelled(self) -> bool:
        """True once the job should stop: cancel requested, lease lost, or worker stopping.

        Cheap (no database round trip): the heartbeat thread polls about once a second.
        """
        if self._cancel.is_set():
            self._cancel_seen = True
            return True
        return False

    def check_cancelled(self) -> None:
        """Raise :class:`LeaseLost` or :class:`JobCancelled` when the job should stop."""
        if self.cancelled():
            if self._lost.is_set():
                raise LeaseLost(f"job {self.job_id}: lease lost")
            raise JobCancelled(f"job {self.job_id}: cancelled")

    def sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds``, waking early on cancellation; returns :meth:`cancelled`."""
        self._cancel.wait(max(0.0, seconds))
        return self.cancelled()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested.is_set()

    @property
    def lease_lost(self) -> bool:
        return self._lost.is_set()

    @property
    def shutting_down(self) -> bool:
        return self._shutdown.is_set()

    @property
    def cancel_seen(self) -> bool:
        return self._cancel_seen

    # -- progress and events --------------------------------------------------------------

    def progress(
        self,
        percent: float | None = None,
        *,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
        step: str | None = None,
    ) -> None:
        """Record progress; written at most about once a second, or with the job's next
        durable write (a leftover, the final state), whichever comes first."""
        with self._lock:
            if percent is not None:
                self._pending["progress_percent"] = float(max(0.0, min(100.0, percent)))
            if bytes_done is not None:
                self._pending["bytes_done"] = int(bytes_done)
            if bytes_total is not None:
                self._pending["bytes_total"] = int(bytes_total)
            if step is not None:
                self._step = step[:64]
                self._pending["current_step"] = self._step
        self._flush_progress(force=False)

    def step(self, name: str, message: str | None = None) -> None:
        """Enter a named step (prepare, snapshot, copy…) and log it as an event (written
        together, as progress is)."""
        self.event(message or f"step: {name}", step=name)
        self.progress(step=name)

    def event(
        self, message: str, level: EventLevel | str = EventLevel.INFO, step: str | None = None
    ):
        """Append to the job's event log (visible to operators: no secrets).

        Events are buffered and written with the job's next write (a leftover, the progress
        flush about once a second, the final state): one transaction for several, never
        after the job's outcome.
        """
        event = PendingEvent(
            at=self._engine.clock(),
            level=EventLevel(level),
            step=(step if step is not None else self._step),
            message=message,
        )
        with self._lock:
            self._events.append(event)

    def warning(self, message: str) -> None:
        self.event(message, EventLevel.WARNING)

    def _flush_progress(self, *, force: bool) -> None:
        with self._write_lock:
            with self._lock:
                if not self._pending and not self._events:
                    return
                now = time.monotonic()
                if not force and now - self._last_progress_write < self._progress_interval:
                    return
                values, self._pending = self._pending, {}
                events, self._events = self._events, []
                self._last_progress_write = now
            try:
                owned = self._engine.save_progress(self.job_id, self.worker_name, events, **values)
            except Exception:
                with self._lock:  # not written: keep them for the next flush
                    self._pending = {**values, **self._pending}
                    self._events = events + self._events
                raise
        if not owned:
            self._lost.set()
            self._cancel.set()

    # -- leftovers ------------------------------------------------------------------------

    @property
    def leftovers(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._leftovers)

    def add_leftover(self, item: dict[str, Any]) -> None:
        """Persist, before going on, something created outside that a crash would strand.

        Example: ``ctx.add_leftover({"type": "vm_snapshot", "vm": "vm-42", "moref": "snapshot-7"})``
        right after the snapshot exists. Raises :class:`LeaseLost` if the job was taken over.
        """
        item = copy.deepcopy(dict(item))
        with self._write_lock, self._lock:
            updated = [*self._leftovers, item]
            if not self._save_leftovers(updated):
                self._lost.set()
                self._cancel.set()
                self.log.error(
                    "job %s: lease lost; leftover not recorded, clean by hand: %s",
                    self.job_id,
                    item,
                )
                raise LeaseLost(f"job {self.job_id}: lease lost")
            self._leftovers = updated

    def remove_leftover(self, item: dict[str, Any]) -> None:
        """Forget a leftover once it is gone (removed or turned into a kept restore point)."""
        with self._write_lock, self._lock:
            updated = [x for x in self._leftovers if x != item]
            if len(updated) == len(self._leftovers):
                return
            if not self._save_leftovers(updated):
                self._lost.set()
                self._cancel.set()
                raise LeaseLost(f"job {self.job_id}: lease lost")
            self._leftovers = updated

    def clear_leftovers(self, session: Session | None = None) -> None:
        """Forget every leftover. With ``session`` the change joins that transaction, so
        that, say, a restore point and the end of its snapshot being a leftover are one
        commit; raises :class:`LeaseLost` (and the caller's transaction rolls back) if the
        job was taken over meanwhile."""
        with self._write_lock, self._lock:
            if not self._leftovers:
                return
            if not self._save_leftovers([], session):
                self._lost.set()
                self._cancel.set()
                raise LeaseLost(f"job {self.job_id}: lease lost")
            self._leftovers = []

    def _save_leftovers(
        self, leftovers: list[dict[str, Any]], session: Session | None = None
    ) -> bool:
        """Write leftovers with the pending progress and events. Holds both locks."""
        owned = self._engine.save_leftovers(
            self.job_id, self.worker_name, leftovers, self._events, session, **self._pending
        )
        self._events, self._pending = [], {}
        self._last_progress_write = time.monotonic()
        return owned
