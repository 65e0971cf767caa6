"""Lease and state changes of a claimed job: heartbeat, progress, leftovers, endings.

A running job's lease is extended by its heartbeat; a worker that misses it loses the job
to a takeover (claiming.py). Every change here is guarded by ownership, so the outcome of a
worker that lost its lease is dropped (logged), never written over the new owner's work.
A failed attempt is queued again with exponential backoff while attempts remain.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import Job
from app.domain.jobs import EventLevel, JobState
from app.jobs.transactions import EngineCore, PendingEvent

log = logging.getLogger("app.jobs.engine")

MAX_ERROR_CHARS = 4000


def _jsonable(value: Mapping[str, Any]) -> dict[str, Any]:
    """A handler's result as plain JSON (a date or a path in its details becomes text)."""
    return json.loads(json.dumps(dict(value), default=str))


def truncate_error(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 1] + "…"


@dataclass(frozen=True)
class LeaseStatus:
    owned: bool
    cancel_requested: bool = False


class StateChanges(EngineCore):
    retry_base_s: float
    retry_cap_s: float

    def backoff(self, attempt: int) -> timedelta:
        """Delay before attempt ``attempt + 1``: base × 2^(attempt-1), capped."""
        seconds = self.retry_base_s * (2 ** max(0, attempt - 1))
        return timedelta(seconds=min(seconds, self.retry_cap_s))

    def extend_lease(self, job_id: int, worker_name: str) -> LeaseStatus:
        """Push the lease out by one lease period; report ownership and cancellation."""
        with self._single_statement_session() as session:
            cancel = session.connection().scalar(
                update(Job)
                .where(self._owned(job_id, worker_name))
                .values(lease_expires_at=self.clock() + self.lease)
                .returning(Job.cancel_requested)
                .execution_options(synchronize_session=False)
            )
            if cancel is not None:
                return LeaseStatus(True, bool(cancel))
            cancel = session.connection().scalar(
                select(Job.cancel_requested).where(Job.id == job_id)
            )
        return LeaseStatus(False, bool(cancel))

    def poll(self, job_id: int, worker_name: str) -> LeaseStatus:
        """Read-only: does this worker still own the job, and was cancellation asked?"""
        with self.db.session() as session:
            row = (
                session.connection()
                .execute(
                    select(Job.worker_name, Job.state, Job.cancel_requested).where(Job.id == job_id)
                )
                .first()
            )
        if row is None:
            return LeaseStatus(False, True)
        return LeaseStatus(
            row.worker_name == worker_name and row.state == JobState.RUNNING,
            bool(row.cancel_requested),
        )

    _PROGRESS = frozenset({"progress_percent", "bytes_done", "bytes_total", "current_step"})

    def save_progress(
        self,
        job_id: int,
        worker_name: str,
        events: Iterable[PendingEvent] = (),
        **values: Any,
    ) -> bool:
        """Write progress and buffered events in one transaction. Events are written even
        when this worker no longer owns the job (they are its log); progress is not."""
        values = {k: v for k, v in values.items() if k in self._PROGRESS}
        events = list(events)
        if not values and not events:
            return True
        with self._single_statement_session() as session:
            if not values:
                self._events(session, job_id, events)
                return True
            return self._update_owned_with_events(session, job_id, worker_name, events, **values)

    def save_leftovers(
        self,
        job_id: int,
        worker_name: str,
        leftovers: list[dict[str, Any]],
        events: Iterable[PendingEvent] = (),
        session: Session | None = None,
        **progress: Any,
    ) -> bool:
        """Record the job's leftovers (with pending progress and events, in one transaction).

        With ``session``, the write joins that transaction (a handler's own, e.g. the catalog
        write that turns a leftover snapshot into a restore point) instead of committing alone.
        """
        progress = {k: v for k, v in progress.items() if k in self._PROGRESS}
        if session is not None:
            return self._update_owned_with_events(
                session, job_id, worker_name, list(events), leftovers=list(leftovers), **progress
            )
        with self._single_statement_session() as own:
            return self.save_leftovers(job_id, worker_name, leftovers, events, own, **progress)

    def add_event(
        self,
        job_id: int,
        message: str,
        level: EventLevel = EventLevel.INFO,
        step: str = "",
    ) -> None:
        with self.db.session() as session:
            self._event(session, job_id, message, level, step)

    # -- endings --------------------------------------------------------------------------

    def _finish(
        self,
        job_id: int,
        worker_name: str,
        event: tuple[EventLevel, str] | None,
        events: Iterable[PendingEvent] = (),
        **values: Any,
    ) -> bool:
        last = [PendingEvent(self.clock(), event[0], "", event[1])] if event else []
        with self._single_statement_session() as session:
            ok = self._update_owned_with_events(
                session, job_id, worker_name, list(events), last, **values
            )
        if not ok:
            log.warning("job %s: worker %s no longer owns it; outcome dropped", job_id, worker_name)
        return ok

    def succeed(
        self,
        job_id: int,
        worker_name: str,
        *,
        partial: bool = False,
        message: str = "",
        events: Iterable[PendingEvent] = (),
        progress: Mapping[str, Any] | None = None,
        result: Mapping[str, Any] | None = None,
    ) -> bool:
        """End the job successfully, writing the job's last ``events`` and ``progress``
        values (bytes done …) and the handler's ``result`` in the same transaction."""
        now = self.clock()
        if partial:
            state, level = JobState.PARTIALLY_SUCCEEDED, EventLevel.WARNING
            text_ = message or "partially succeeded"
            values: dict[str, Any] = {}
        else:
            state, level = JobState.SUCCEEDED, EventLevel.INFO
            text_ = message or "succeeded"
            values = {"progress_percent": 100.0}
        values = {
            **{k: v for k, v in (progress or {}).items() if k in self._PROGRESS},
            **values,
        }
        return self._finish(
            job_id,
            worker_name,
            (level, text_),
            events,
            state=state,
            finished_at=now,
            lease_expires_at=None,
            error=None,
            result=_jsonable(result) if result is not None else None,
            **values,
        )

    def cancel(self, job_id: int, worker_name: str, message: str = "cancelled") -> bool:
        return self._finish(
            job_id,
            worker_name,
            (EventLevel.WARNING, message),
            state=JobState.CANCELLED,
            finished_at=self.clock(),
            lease_expires_at=None,
        )

    def fail(
        self,
        job_id: int,
        worker_name: str,
        error: str,
        *,
        retry: bool = True,
        fix: str | None = None,
    ) -> JobState | None:
        """End an attempt with ``error``: requeue with backoff while attempts remain.
        ``fix`` (where the operator fixes the cause) is kept in ``result["fix"]``.

        Returns the state the job is left in, or None when this worker no longer owns it.
        """
        error = truncate_error(error)
        with self.write_session() as session:
            query = select(Job).where(self._owned(job_id, worker_name))
            if self.is_postgresql:
                query = query.with_for_update()
            job = session.scalar(query)
            if job is None:
                log.warning(
                    "job %s: worker %s no longer owns it; failure dropped", job_id, worker_name
                )
                return None
            now = self.clock()
            job.error = error
            job.lease_expires_at = None
            if fix:
                job.result = {"fix": fix}
            if retry and job.attempts < job.max_attempts and not job.cancel_requested:
                delay = self.backoff(job.attempts)
                job.state = JobState.QUEUED
                job.worker_name = None
                job.not_before = now + delay
                message = (
                    f"attempt {job.attempts} of {job.max_attempts} failed: {error}; "
                    f"retrying in {int(delay.total_seconds())} s"
                )
                level = EventLevel.WARNING
            else:
                job.state = JobState.FAILED
                job.finished_at = now
                message = f"failed after {job.attempts} of {job.max_attempts} attempts: {error}"
                level = EventLevel.ERROR
            self._event(session, job_id, message, level, at=now)
            return job.state

    def release(self, job_id: int, worker_name: str, reason: str) -> bool:
        """Give a running job back to the queue without counting the attempt (shutdown)."""
        with self.db.session() as session:
            ok = self._update_owned(
                session,
                job_id,
                worker_name,
                state=JobState.QUEUED,
                worker_name=None,
                lease_expires_at=None,
                not_before=self.clock(),
                attempts=Job.attempts - 1,
            )
            if ok:
                self._event(session, job_id, f"returned to the queue: {reason}", EventLevel.WARNING)
        return ok

    def request_cancel(self, job_id: int) -> JobState | None:
        """Ask a job to stop (what the API's cancel does): queued ends now, running is told."""
        with self.write_session() as session:
            query = select(Job).where(Job.id == job_id)
            if self.is_postgresql:
                query = query.with_for_update()
            job = session.scalar(query)
            if job is None:
                return None
            if job.state.finished:
                return job.state
            job.cancel_requested = True
            if job.state == JobState.QUEUED:
                job.state = JobState.CANCELLED
                job.finished_at = self.clock()
            return job.state
