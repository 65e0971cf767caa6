"""Claiming: which job a worker takes next, and whether it may start now (admission).

Abandoned jobs (running, lease expired) come first: their leftovers may hold snapshots
open. Then queued jobs that are due, oldest first. A candidate is admitted when the worker
has every capability it requires, no other job runs on its Exchange server, and every
resource it loads with a limit (``ResourceLimits``) has a free place.

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
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, case, func, select, text, true, update
from sqlalchemy.orm import Session, aliased

from app.db.models import Job
from app.domain.jobs import EventLevel, JobKind, JobState
from app.jobs.transactions import EngineCore, PendingEvent

# Advisory lock namespaces (first int4 of the two-key form); "BWK" plus a small number.
_LOCK_NS_SERVER = 0x42574B01
_LOCK_NS_RESOURCE = 0x42574B02


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def resource_key(resource: str) -> int:
    """A stable int4 for a resource name (collisions only serialise a little more)."""
    return _signed32(zlib.crc32(resource.encode()))


def resources_of(resources: Any) -> list[str]:
    """The outside resources a job loads, from its ``resources`` column ("datastore:ds-1")."""
    raw = resources or []
    if isinstance(raw, str):
        raw = [raw]
    return sorted({str(r) for r in raw if isinstance(r, str) and r})


def capabilities_of(required: Any) -> set[str]:
    if not required:
        return set()
    if isinstance(required, str):
        return {required}
    return {str(c) for c in required}


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


class Claiming(EngineCore):
    limits: ResourceLimits
    claim_batch: int
    max_scan: int
    abandoned_scan_interval: timedelta
    _no_abandoned_until: datetime | None

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
        Job.resources,
        Job.attempts,
        Job.max_attempts,
        Job.leftovers,
        Job.cancel_requested,
        Job.worker_name,
        Job.lease_expires_at,
        Job.current_step,
        Job.started_at,
        Job.not_before,
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
        if not self.is_postgresql:
            return list(session.connection().execute(query))
        # The rows this worker got (SKIP LOCKED), each with its server's advisory lock tried
        # in the same statement: one round trip less per claim than a lock statement after.
        # Locks are tried for the rows returned only (the outer query), never for the rows
        # the scan passed over; a row another claimer holds is not returned at all.
        got = query.with_for_update(skip_locked=True, of=Job).subquery()
        locked = case(
            (got.c.server_id.is_(None), true()),
            else_=func.pg_try_advisory_xact_lock(_LOCK_NS_SERVER, got.c.server_id),
        )
        outer = select(got, locked.label("server_locked")).order_by(*(got.c[c.key] for c in order))
        return list(session.connection().execute(outer))

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
            select(Job.resources).where(Job.state == JobState.RUNNING, Job.id != exclude_id)
        )
        for (resources,) in rows:
            for resource in resources_of(resources):
                counts[resource] = counts.get(resource, 0) + 1
        return counts

    def _admissible(self, session: Session, job: Row, capabilities: set[str]) -> bool:
        if not capabilities_of(job.required_capabilities) <= capabilities:
            return False
        if job.server_id is not None:
            # PostgreSQL: tried with the candidates (see _candidates).
            locked = getattr(job, "server_locked", None)
            if locked is None:
                locked = self._try_lock(session, _LOCK_NS_SERVER, job.server_id)
            if not locked:
                return False
            # On PostgreSQL the re-check after the lock is part of the claim's UPDATE (see
            # _take): a statement that starts after the lock sees every committed claim.
            if not self.is_postgresql and self._server_busy(session, job.server_id, job.id):
                return False
        limited = [r for r in resources_of(job.resources) if self.limits.limit_for(r) is not None]
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
