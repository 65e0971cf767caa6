"""The job table as a queue: claim with a lease, heartbeat, finish, retry, cancel.

Every state change is one short transaction guarded by ownership (``worker_name`` and
``state = 'running'``), so a worker that lost its lease can never overwrite the work of the
worker that took the job over.

Claiming differs per database:

* PostgreSQL: candidates are read ``FOR UPDATE SKIP LOCKED`` so concurrent workers never wait
  for, nor take, the same row. Rules that span rows (one running job per Exchange server,
  per-resource limits) are made safe with transaction-level advisory locks taken with
  ``pg_try_advisory_xact_lock`` before they are re-checked, so two workers cannot both see
  "server idle" and both start a job on it.
* SQLite: the claim transaction starts with ``BEGIN IMMEDIATE``, which makes it the single
  writer for its few milliseconds; the same checks then cannot race.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    DateTime,
    Row,
    Text,
    bindparam,
    func,
    insert,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, aliased

from app.db.models import Job, JobEvent
from app.db.session import Database
from app.db.types import utcnow
from app.domain.jobs import EventLevel, JobKind, JobState

log = logging.getLogger(__name__)

# Advisory lock namespaces (first int4 of the two-key form); "BWK" plus a small number.
_LOCK_NS_SERVER = 0x42574B01
_LOCK_NS_RESOURCE = 0x42574B02
MAX_ERROR_CHARS = 4000
_PG_TIMES = ARRAY(DateTime(timezone=True))
_PG_TEXTS = ARRAY(Text())


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def resource_key(resource: str) -> int:
    """A stable int4 for a resource name (collisions only serialise a little more)."""
    return _signed32(zlib.crc32(resource.encode()))


def resources_of(params: Mapping[str, Any] | None) -> list[str]:
    """The outside resources a job loads, from ``params["resources"]`` ("datastore:ds-1")."""
    raw = (params or {}).get("resources") or []
    if isinstance(raw, str):
        raw = [raw]
    return sorted({str(r) for r in raw if isinstance(r, str) and r})


def capabilities_of(required: Any) -> set[str]:
    if not required:
        return set()
    if isinstance(required, str):
        return {required}
    return {str(c) for c in required}


def _jsonable(value: Mapping[str, Any]) -> dict[str, Any]:
    """A handler's result as plain JSON (a date or a path in its details becomes text)."""
    return json.loads(json.dumps(dict(value), default=str))


def truncate_error(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 1] + "…"


@functools.cache
def _other_job():
    """An alias of ``jobs`` for "another job" conditions (built once: aliasing is slow)."""
    return aliased(Job)


@functools.cache
def _server_busy_clause():
    """EXISTS another running job on the same Exchange server (built once: aliasing is slow)."""
    other = aliased(Job)
    return (
        select(other.id)
        .where(
            other.server_id == Job.server_id,
            other.state == JobState.RUNNING,
            other.id != Job.id,
        )
        .exists()
    )


@dataclass(frozen=True)
class ResourceLimits:
    """How many running jobs may load one resource at once.

    ``limits`` names single resources (``{"datastore:ds-1": 2}``); ``defaults`` applies to
    every resource of a kind, the part before the colon (``{"datastore": 4, "host": 8}``).
    A resource with neither is unlimited.
    """

    limits: Mapping[str, int] = field(default_factory=dict)
    defaults: Mapping[str, int] = field(default_factory=dict)

    def limit_for(self, resource: str) -> int | None:
        if resource in self.limits:
            return self.limits[resource]
        kind = resource.split(":", 1)[0]
        return self.defaults.get(kind)

    def __bool__(self) -> bool:
        return bool(self.limits or self.defaults)


@dataclass(frozen=True)
class ClaimedJob:
    """What a worker got from a claim: a snapshot of the row at claim time."""

    id: int
    kind: JobKind
    params: dict[str, Any]
    policy_id: int | None
    server_id: int | None
    database_id: int | None
    required_capabilities: list[str]
    attempt: int
    max_attempts: int
    leftovers: list[dict[str, Any]]
    cancel_requested: bool
    lease_expires_at: datetime
    # Set when the job was taken over from a worker whose lease ran out.
    taken_over_from: str | None = None
    # False when a takeover found no attempt left: clean up, then fail.
    rerun: bool = True


@dataclass(frozen=True)
class PendingEvent:
    """An event a running job logged, not yet written (see JobContext.event)."""

    at: datetime
    level: EventLevel
    step: str
    message: str


@dataclass(frozen=True)
class LeaseStatus:
    owned: bool
    cancel_requested: bool = False


class JobEngine:
    """Queue operations on the ``jobs`` table; safe to share between threads.

    Statements go straight to the session's connection (Core), not through the ORM's
    execution path: nothing here needs ORM objects, and a job's overhead is mostly these
    calls."""

    def __init__(
        self,
        database: Database,
        *,
        lease_seconds: float = 60.0,
        retry_base_s: float = 30.0,
        retry_cap_s: float = 1800.0,
        limits: Mapping[str, int] | None = None,
        default_limits: Mapping[str, int] | None = None,
        clock: Callable[[], datetime] = utcnow,
        claim_batch: int = 20,
        max_scan: int = 200,
    ):
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.db = database
        self.lease = timedelta(seconds=lease_seconds)
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.limits = ResourceLimits(dict(limits or {}), dict(default_limits or {}))
        self.clock = clock
        self.claim_batch = max(1, claim_batch)
        self.max_scan = max(self.claim_batch, max_scan)
        # After a search for abandoned jobs finds none, the next one waits this long: a lease
        # only runs out after lease_seconds, so takeovers are late by a quarter lease at most,
        # and a busy worker saves a query per claim.
        self.abandoned_scan_interval = self.lease / 4
        self._no_abandoned_until: datetime | None = None

    # -- transactions ---------------------------------------------------------------------

    @property
    def is_postgresql(self) -> bool:
        return self.db.engine.dialect.name == "postgresql"

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A transaction that reads then writes without racing other writers.

        SQLite: ``BEGIN IMMEDIATE`` takes the write lock before the first read. PostgreSQL:
        a plain READ COMMITTED transaction; callers lock rows or take advisory locks.
        """
        with self.db.session() as session:
            if self.db.is_sqlite:
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield session

    @contextmanager
    def _single_statement_session(self) -> Iterator[Session]:
        """For writes that are one statement on PostgreSQL (an owned update with its events,
        a lease extension): run in autocommit, as a lone statement is atomic anyway, which
        saves the BEGIN and COMMIT round trips. Elsewhere a normal transaction."""
        if not self.is_postgresql:
            with self.db.session() as session:
                yield session
            return
        with self.db.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            with Session(bind=conn, expire_on_commit=False) as session:
                yield session

    def _try_lock(self, session: Session, namespace: int, key: int) -> bool:
        if not self.is_postgresql:
            return True  # the SQLite claim transaction already holds the write lock
        return bool(
            session.connection()
            .execute(
                text("SELECT pg_try_advisory_xact_lock(:ns, :key)"),
                {"ns": namespace, "key": key},
            )
            .scalar()
        )

    # -- claim ----------------------------------------------------------------------------

    def backoff(self, attempt: int) -> timedelta:
        """Delay before attempt ``attempt + 1``: base × 2^(attempt-1), capped."""
        seconds = self.retry_base_s * (2 ** max(0, attempt - 1))
        return timedelta(seconds=min(seconds, self.retry_cap_s))

    def _capability_clause(self, capabilities: set[str]):
        caps = sorted(capabilities)
        if self.is_postgresql:
            return text(
                "(jobs.required_capabilities IS NULL"
                " OR json_typeof(jobs.required_capabilities) <> 'array'"
                " OR CAST(jobs.required_capabilities AS jsonb) <@ CAST(:caps AS jsonb))"
            ).bindparams(caps=json.dumps(caps))
        return text(
            "NOT EXISTS (SELECT 1 FROM json_each(jobs.required_capabilities) AS c"
            " WHERE c.value NOT IN :caps)"
        ).bindparams(bindparam("caps", value=caps, expanding=True))

    _COLUMNS = (
        Job.id,
        Job.kind,
        Job.state,
        Job.params,
        Job.policy_id,
        Job.server_id,
        Job.database_id,
        Job.required_capabilities,
        Job.attempts,
        Job.max_attempts,
        Job.leftovers,
        Job.cancel_requested,
        Job.worker_name,
        Job.lease_expires_at,
        Job.current_step,
        Job.started_at,
    )

    def _candidates(
        self,
        session: Session,
        now: datetime,
        capabilities: set[str],
        kinds: list[JobKind],
        seen: list[int],
        *,
        abandoned: bool,
    ) -> list[Row]:
        server_busy = _server_busy_clause()
        if abandoned:  # running, but the lease ran out: the worker died or hung
            due = (Job.state == JobState.RUNNING) & (Job.lease_expires_at < now)
            order = (Job.lease_expires_at, Job.id)
        else:
            due = (Job.state == JobState.QUEUED) & (Job.not_before <= now)
            order = (Job.not_before, Job.id)
        query = (
            select(*self._COLUMNS)
            .where(
                due,
                Job.kind.in_(kinds),
                self._capability_clause(capabilities),
                Job.server_id.is_(None) | ~server_busy,
            )
            .order_by(*order)
            .limit(self.claim_batch)
        )
        if seen:
            query = query.where(Job.id.not_in(seen))
        if self.is_postgresql:
            query = query.with_for_update(skip_locked=True, of=Job)
        return list(session.connection().execute(query))

    def _server_idle(self, job: Row) -> tuple:
        """Extra conditions of the claim's UPDATE: on PostgreSQL, no other running job on the
        job's server (checked after the server's advisory lock is held)."""
        if job.server_id is None or not self.is_postgresql:
            return ()
        other = _other_job()
        return (
            ~select(other.id)
            .where(
                other.server_id == job.server_id,
                other.state == JobState.RUNNING,
                other.id != job.id,
            )
            .exists(),
        )

    def _server_busy(self, session: Session, server_id: int, job_id: int) -> bool:
        return (
            session.connection().scalar(
                select(Job.id)
                .where(
                    Job.server_id == server_id,
                    Job.state == JobState.RUNNING,
                    Job.id != job_id,
                )
                .limit(1)
            )
            is not None
        )

    def _resources_in_use(self, session: Session, exclude_id: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        rows = session.connection().execute(
            select(Job.params).where(Job.state == JobState.RUNNING, Job.id != exclude_id)
        )
        for (params,) in rows:
            for resource in resources_of(params):
                counts[resource] = counts.get(resource, 0) + 1
        return counts

    def _admissible(self, session: Session, job: Row, capabilities: set[str]) -> bool:
        if not capabilities_of(job.required_capabilities) <= capabilities:
            return False
        if job.server_id is not None:
            if not self._try_lock(session, _LOCK_NS_SERVER, job.server_id):
                return False
            # On PostgreSQL the re-check after the lock is part of the claim's UPDATE (see
            # _take): a statement that starts after the lock sees every committed claim.
            if not self.is_postgresql and self._server_busy(session, job.server_id, job.id):
                return False
        limited = [r for r in resources_of(job.params) if self.limits.limit_for(r) is not None]
        if not limited:
            return True
        for resource in limited:
            if not self._try_lock(session, _LOCK_NS_RESOURCE, resource_key(resource)):
                return False
        in_use = self._resources_in_use(session, job.id)
        return all(in_use.get(r, 0) < (self.limits.limit_for(r) or 0) for r in limited)

    def claim(
        self,
        worker_name: str,
        capabilities: Iterable[str] = (),
        kinds: Iterable[JobKind] | None = None,
    ) -> ClaimedJob | None:
        """Take the next job this worker may run, or None.

        Abandoned jobs (running, lease expired) come first: their leftovers may hold
        snapshots open. Then queued jobs that are due (``not_before <= now``), oldest first.
        At most ``max_scan`` candidates per kind of search are looked at per call.
        """
        caps = set(capabilities)
        kind_list = list(JobKind) if kinds is None else list(kinds)
        if not kind_list:
            return None
        with self.write_session() as session:
            now = self.clock()
            for abandoned in (True, False):
                if abandoned and self._no_abandoned_until and now < self._no_abandoned_until:
                    continue
                seen: list[int] = []
                while len(seen) < self.max_scan:
                    batch = self._candidates(
                        session, now, caps, kind_list, seen, abandoned=abandoned
                    )
                    for job in batch:
                        seen.append(job.id)
                        if self._admissible(session, job, caps):
                            taken = self._take(session, job, worker_name, now)
                            if taken is not None:
                                return taken
                    if len(batch) < self.claim_batch:
                        break
                if abandoned and not seen:
                    self._no_abandoned_until = now + self.abandoned_scan_interval
            return None

    def _event(
        self,
        session: Session,
        job_id: int,
        message: str,
        level: EventLevel = EventLevel.INFO,
        step: str = "",
        at: datetime | None = None,
    ) -> None:
        session.connection().execute(
            insert(JobEvent).values(
                job_id=job_id, at=at or self.clock(), level=level, step=step, message=message
            )
        )

    def _events(self, session: Session, job_id: int, events: Iterable[PendingEvent]) -> None:
        """Write buffered events (one statement for all), in the order they happened."""
        rows = [
            {"job_id": job_id, "at": e.at, "level": e.level, "step": e.step, "message": e.message}
            for e in events
        ]
        if rows:
            session.connection().execute(insert(JobEvent), rows)

    def _write_with_events(
        self, session: Session, statement, job_id: int, events: list[PendingEvent]
    ) -> bool:
        """Run an UPDATE of the job and insert its events; on PostgreSQL as one statement
        (a data-modifying CTE), which saves a round trip on every claim, leftover and final
        state. The events are inserted only if the UPDATE changed the row; returns whether
        it did."""
        if not events or not self.is_postgresql:
            changed = session.connection().execute(statement).rowcount == 1
            if changed:
                self._events(session, job_id, events)
            return changed
        changed = statement.returning(Job.id).cte("changed")
        # Arrays unnested rather than a VALUES list, so the statement's shape does not
        # depend on how many events there are and SQLAlchemy compiles it once.
        rows = (
            func.unnest(
                bindparam("ev_at", [e.at for e in events], type_=_PG_TIMES),
                bindparam("ev_level", [e.level.value for e in events], type_=_PG_TEXTS),
                bindparam("ev_step", [e.step for e in events], type_=_PG_TEXTS),
                bindparam("ev_message", [e.message for e in events], type_=_PG_TEXTS),
            )
            .table_valued("at", "level", "step", "message", with_ordinality="n")
            .render_derived(name="new_events")
        )
        inserted = session.connection().execute(
            insert(JobEvent).from_select(
                ["job_id", "at", "level", "step", "message"],
                # Ordered, so event ids follow the order the events happened in.
                select(changed.c.id, rows.c.at, rows.c.level, rows.c.step, rows.c.message)
                .select_from(changed.join(rows, true()))
                .order_by(rows.c.n),
            ),
            execution_options={"preserve_rowcount": True},  # not kept for INSERTs otherwise
        )
        return inserted.rowcount > 0

    def _take(
        self, session: Session, job: Row, worker_name: str, now: datetime
    ) -> ClaimedJob | None:
        """Mark the job as this worker's; None when (PostgreSQL) its server turned out busy."""
        takeover = job.state == JobState.RUNNING
        attempts = job.attempts
        rerun = True
        events: list[PendingEvent] = []
        if takeover:
            rerun = job.attempts < job.max_attempts and not job.cancel_requested
            expired = job.lease_expires_at.isoformat() if job.lease_expires_at else "?"
            events.append(
                PendingEvent(
                    now,
                    EventLevel.WARNING,
                    job.current_step or "",
                    f"taken over from worker {job.worker_name or '?'} by {worker_name}: its "
                    f"lease expired at {expired}",
                )
            )
        if rerun:
            attempts += 1
        lease_expires_at = now + self.lease
        take = (
            update(Job)
            .where(Job.id == job.id, *self._server_idle(job))
            .values(
                state=JobState.RUNNING,
                worker_name=worker_name,
                lease_expires_at=lease_expires_at,
                started_at=job.started_at or now,
                finished_at=None,
                attempts=attempts,
            )
            .execution_options(synchronize_session=False)
        )
        if rerun and not job.cancel_requested:
            events.append(
                PendingEvent(
                    now,
                    EventLevel.INFO,
                    "",
                    f"attempt {attempts} of {job.max_attempts} on worker {worker_name}",
                )
            )
        if not self._write_with_events(session, take, job.id, events):
            return None
        return ClaimedJob(
            id=job.id,
            kind=job.kind,
            params=copy.deepcopy(job.params or {}),
            policy_id=job.policy_id,
            server_id=job.server_id,
            database_id=job.database_id,
            required_capabilities=sorted(capabilities_of(job.required_capabilities)),
            attempt=attempts,
            max_attempts=job.max_attempts,
            leftovers=copy.deepcopy(list(job.leftovers or [])),
            cancel_requested=job.cancel_requested,
            lease_expires_at=lease_expires_at,
            taken_over_from=job.worker_name if takeover else None,
            rerun=rerun,
        )

    # -- while running --------------------------------------------------------------------

    def _owned(self, job_id: int, worker_name: str):
        return (
            (Job.id == job_id) & (Job.worker_name == worker_name) & (Job.state == JobState.RUNNING)
        )

    def _update_owned_with_events(
        self,
        session: Session,
        job_id: int,
        owner: str,
        events: list[PendingEvent],
        owned_events: Iterable[PendingEvent] = (),
        /,
        **values,
    ) -> bool:
        """Update the job if ``owner`` still holds it, and write ``events`` either way (they
        are its log) plus ``owned_events`` only if it does; one statement when it does."""
        statement = (
            update(Job)
            .where(self._owned(job_id, owner))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if self._write_with_events(session, statement, job_id, [*events, *owned_events]):
            return True
        self._events(session, job_id, events)  # not owned: write the log alone
        return False

    def _update_owned(self, session: Session, job_id: int, owner: str, /, **values) -> bool:
        result = session.connection().execute(
            update(Job)
            .where(self._owned(job_id, owner))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

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
