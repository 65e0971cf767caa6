"""Turns enabled policies into backup jobs when they are due.

A policy is due by cron expression (evaluated in the scheduler's time zone, UTC by default)
or by recovery point objective: when its newest backup job was created ``rpo_minutes`` ago
or more (or it never had one). Each due policy yields one job per target (a server, or one
of its databases) with ``created_by="scheduler"`` and ``params={"scheduled_for": iso}``.

State lives in the jobs table alone: the last cron run of a policy is the
``scheduled_for`` of its newest scheduler job. After downtime only the latest missed run is
made up (one catch-up job, not a burst). A target whose previous backup job from the same
policy is still queued or running is skipped this time.

Exactly once with several schedulers: on PostgreSQL each tick runs in one transaction under
``pg_try_advisory_xact_lock`` (a scheduler that does not get it skips the tick; the holder
does the work); on SQLite the tick transaction starts with ``BEGIN IMMEDIATE``.

The scheduler is handed what it cannot know at this layer (the composition root,
app/composition.py, does it): further job ``sources`` run each tick (repository expiry and
verification) and the notifier. What a backup job needs of a worker comes from the backup
handler's registration, through ``enqueue``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from croniter import croniter
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.audit import Actor
from app.db.models import Connection, Job, Policy, PolicyTarget
from app.db.session import Database
from app.db.types import utcnow
from app.domain.connections import ConnectionKind
from app.domain.jobs import JobKind, JobState
from app.domain.schedules import schedule_problem
from app.jobs.enqueue import enqueue
from app.jobs.handlers import HandlerRegistry
from app.notifications import Notifier

log = logging.getLogger(__name__)

SCHEDULER = "scheduler"
SCHEDULER_ACTOR = Actor(SCHEDULER, "system")
# pg advisory lock key (one bigint): "BWKSCHED" folded into 63 bits.
SCHEDULER_LOCK_KEY = 0x42574B5343484544 & 0x7FFFFFFFFFFFFFFF

# (session, policy, target) -> what a backup job needs, replacing what the backup handler's
# registration says (tests, special set-ups): required_capabilities, resources, max_attempts,
# params (merged; scheduled_for always wins).
JobTemplate = Callable[[Session, Policy, PolicyTarget], dict[str, Any]]
# (session, now) -> ids of the jobs it queued: more work made each tick (repository upkeep).
JobSource = Callable[[Session, datetime], list[int]]


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class Scheduler:
    def __init__(
        self,
        database: Database,
        *,
        timezone: tzinfo = UTC,
        job_template: JobTemplate | None = None,
        lock_key: int = SCHEDULER_LOCK_KEY,
        resync_minutes: int | None = None,
        notifier: Notifier | None = None,
        sources: Sequence[JobSource] = (),
        registry: HandlerRegistry | None = None,
    ):
        self.db = database
        self.sources = tuple(sources)
        self.registry = registry
        # Periodic inventory resync of every vCenter (None: only when asked).
        self.resync_minutes = resync_minutes
        self.notifier = notifier
        self.tz = timezone
        self.job_template = job_template
        self.lock_key = lock_key

    # -- when ------------------------------------------------------------------------------

    def _cron_due(
        self, expr: str, last: datetime, now: datetime
    ) -> tuple[datetime, datetime] | None:
        """(latest fire time <= now, first fire time missed) when a run is due, else None."""
        first = croniter(expr, last.astimezone(self.tz)).get_next(datetime).astimezone(UTC)
        if first > now:
            return None
        latest = (
            croniter(expr, (now + timedelta(seconds=1)).astimezone(self.tz))
            .get_prev(datetime)
            .astimezone(UTC)
        )
        while latest > now:  # sub-minute expressions
            latest = croniter(expr, latest.astimezone(self.tz)).get_prev(datetime).astimezone(UTC)
        return max(latest, first), first

    def _last_scheduled(self, session: Session, policy: Policy) -> datetime | None:
        rows = session.scalars(
            select(Job.params)
            .where(
                Job.policy_id == policy.id,
                Job.kind == JobKind.BACKUP,
                Job.created_by == SCHEDULER,
                Job.parent_id.is_(None),  # its runs, not the per-target jobs they queued
            )
            .order_by(Job.id.desc())
            .limit(5)
        )
        times = [t for t in (parse_time((p or {}).get("scheduled_for")) for p in rows) if t]
        return max(times) if times else None

    def _newest_backup(self, session: Session, policy: Policy) -> datetime | None:
        return session.scalar(
            select(Job.created_at)
            .where(Job.policy_id == policy.id, Job.kind == JobKind.BACKUP)
            .order_by(Job.created_at.desc())
            .limit(1)
        )

    def due(self, session: Session, policy: Policy, now: datetime) -> tuple[datetime, str] | None:
        """When the policy is due: (scheduled_for, note) or None."""
        if policy.schedule_cron:
            expr = policy.schedule_cron.strip()
            problem = schedule_problem(expr, now)
            if problem:  # stored before validation said so; reported by tick()
                raise ValueError(problem)
            last = self._last_scheduled(session, policy) or policy.created_at or now
            found = self._cron_due(expr, last, now)
            if found is None:
                return None
            scheduled_for, first_missed = found
            note = ""
            if first_missed < scheduled_for:
                note = (
                    f"catch-up: runs from {first_missed.isoformat()} to "
                    f"{scheduled_for.isoformat()} were missed; one job instead of each"
                )
            return scheduled_for, note
        if policy.rpo_minutes:
            newest = self._newest_backup(session, policy)
            if newest is not None and now - newest < timedelta(minutes=policy.rpo_minutes):
                return None
            if newest is None:
                return now, "no backup yet for this RPO policy"
            age = int((now - newest).total_seconds() // 60)
            return now, f"RPO {policy.rpo_minutes} min: newest backup job is {age} min old"
        return None

    # -- what -----------------------------------------------------------------------------

    def _target_busy(self, session: Session, policy: Policy, target: PolicyTarget) -> bool:
        db_clause = (
            Job.database_id.is_(None)
            if target.database_id is None
            else Job.database_id == target.database_id
        )
        return (
            session.scalar(
                select(Job.id)
                .where(
                    Job.policy_id == policy.id,
                    Job.kind == JobKind.BACKUP,
                    Job.server_id == target.server_id,
                    db_clause,
                    Job.state.in_((JobState.QUEUED, JobState.RUNNING)),
                )
                .limit(1)
            )
            is not None
        )

    def _make_jobs(
        self, session: Session, policy: Policy, scheduled_for: datetime, note: str, now: datetime
    ) -> list[int]:
        created: list[int] = []
        for target in sorted(policy.targets, key=lambda t: (t.server_id, t.database_id or 0)):
            if self._target_busy(session, policy, target):
                log.info(
                    "policy %s: server %s database %s still has a backup queued or running; "
                    "skipping %s",
                    policy.name,
                    target.server_id,
                    target.database_id,
                    scheduled_for.isoformat(),
                )
                continue
            template = self.job_template
            extra = dict(template(session, policy, target)) if template else {}
            params = dict(extra.pop("params", {}) or {})
            params["scheduled_for"] = scheduled_for.isoformat()
            message = f"scheduled by policy {policy.name} for {scheduled_for.isoformat()}"
            job = enqueue(
                session,
                JobKind.BACKUP,
                actor=SCHEDULER_ACTOR,
                params=params,
                policy_id=policy.id,
                server_id=target.server_id,
                database_id=target.database_id,
                capabilities=extra.get("required_capabilities", []) if template else None,
                resources=extra.get("resources", []) if template else None,
                max_attempts=extra.get("max_attempts"),
                at=now,
                events=[message, note] if note else [message],
                audit_action="job.backup",
                audit_detail={"policy_id": policy.id, "scheduled_for": params["scheduled_for"]},
                registry=self.registry,
            )
            created.append(job.id)
        if not policy.targets:
            log.debug("policy %s is due but has no targets", policy.name)
        return created

    # -- tick -----------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> list[int]:
        """Create the jobs that are due at ``now``; returns their ids.

        Returns [] without looking when another scheduler holds the PostgreSQL lock.
        """
        now = now or utcnow()
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        created: list[int] = []
        with self.db.session() as session:
            if self.db.is_sqlite:
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            else:
                got = session.execute(
                    text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": self.lock_key}
                ).scalar()
                if not got:
                    log.debug("another scheduler holds the lock; skipping this tick")
                    return []
            policies = session.scalars(
                select(Policy).where(Policy.enabled.is_(True)).order_by(Policy.id)
            ).all()
            failures: list[tuple[Policy, str, str]] = []
            for policy in policies:
                try:
                    with session.begin_nested():
                        found = self.due(session, policy, now)
                        if found is not None:
                            created += self._make_jobs(session, policy, *found, now)
                except Exception as exc:
                    # Isolated: the others are scheduled, and the notifier reports this one.
                    log.exception("policy %s: scheduling failed", policy.name)
                    failures.append((policy, "scheduling", f"{type(exc).__name__}: {exc}"))
            if self.resync_minutes:
                created += self._schedule_syncs(session, now)
            for source in self.sources:
                created += source(session, now)
            if self.notifier is not None:
                try:
                    with session.begin_nested():
                        self.notifier.sweep(session, now, failures)
                except Exception:
                    log.exception("sending notifications failed")
        if created:
            log.info("scheduler created %d job(s): %s", len(created), created)
        return created

    def _schedule_syncs(self, session: Session, now: datetime) -> list[int]:
        """A sync job per vCenter whose inventory is older than ``resync_minutes``."""
        window = now - timedelta(minutes=self.resync_minutes)
        recent = session.scalars(
            select(Job.params).where(
                Job.kind == JobKind.SYNC,
                (Job.created_at >= window) | Job.state.in_((JobState.QUEUED, JobState.RUNNING)),
            )
        ).all()
        fresh = {(p or {}).get("connection_id") for p in recent}
        created = []
        vcenters = session.scalars(
            select(Connection.id).where(Connection.kind == ConnectionKind.VCENTER)
        ).all()
        for connection_id in vcenters:
            if connection_id in fresh:
                continue
            job = enqueue(
                session,
                JobKind.SYNC,
                actor=SCHEDULER_ACTOR,
                params={"connection_id": connection_id},
                capabilities=["vcenter"],
                at=now,
                registry=self.registry,
            )
            created.append(job.id)
        return created

    def run_forever(self, stop_event: threading.Event, interval: float = 30.0) -> None:
        """Tick every ``interval`` seconds until ``stop_event`` is set."""
        log.info("scheduler running (every %.0f s)", interval)
        while not stop_event.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            stop_event.wait(interval)
