"""The catalog queries behind ``/metrics``: grouped reads, one per figure, never per server."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import (
    Connection,
    ExchangeServer,
    Job,
    Mailbox,
    MailboxRestorePoint,
    Policy,
    PolicyTarget,
    Proxy,
    RepositoryUsage,
    RestorePoint,
)
from app.db.types import utcnow
from app.domain.jobs import JobState
from app.domain.protection import RestorePointStatus, Verification
from app.domain.rpo import objective_s

Row = tuple[tuple[str, ...], float]


@dataclass
class ProtectionFigures:
    newest: list[Row] = field(default_factory=list)
    newest_verified: list[Row] = field(default_factory=list)
    objective: list[Row] = field(default_factory=list)
    age: list[Row] = field(default_factory=list)
    protected: list[Row] = field(default_factory=list)
    mailbox_newest: list[Row] = field(default_factory=list)
    jobs: list[Row] = field(default_factory=list)
    duration_sum: list[Row] = field(default_factory=list)
    duration_count: list[Row] = field(default_factory=list)
    bytes_read: list[Row] = field(default_factory=list)
    stored: list[Row] = field(default_factory=list)
    logical: list[Row] = field(default_factory=list)
    free: list[Row] = field(default_factory=list)
    measured: list[Row] = field(default_factory=list)
    heartbeats: list[Row] = field(default_factory=list)


def _ts(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _newest(session: Session, *where) -> dict[int, datetime]:
    rows = session.execute(
        select(RestorePoint.server_id, func.max(RestorePoint.captured_at))
        .where(RestorePoint.server_id.is_not(None), *where)
        .group_by(RestorePoint.server_id)
    )
    return dict(rows.all())


def protection_figures(session: Session) -> ProtectionFigures:
    now = utcnow()
    out = ProtectionFigures()
    names = dict(session.execute(select(ExchangeServer.id, ExchangeServer.name)).all())
    available = RestorePoint.status == RestorePointStatus.AVAILABLE
    newest = _newest(session, available)
    verified = _newest(session, available, RestorePoint.verification == Verification.VERIFIED)
    objectives: dict[int, float] = {}
    memo: dict[str | None, float | None] = {}
    for server_id, rpo, cron in session.execute(
        select(PolicyTarget.server_id, Policy.rpo_minutes, Policy.schedule_cron)
        .join(Policy, Policy.id == PolicyTarget.policy_id)
        .where(Policy.enabled.is_(True))
    ):
        objective = objective_s(rpo, cron, now, memo)
        if objective is not None:
            objectives[server_id] = min(objective, objectives.get(server_id, objective))
    for server_id, name in sorted(names.items(), key=lambda item: item[1]):
        label = (name,)
        if server_id in newest:
            out.newest.append((label, _ts(newest[server_id])))
            out.age.append((label, max(0.0, _ts(now) - _ts(newest[server_id]))))
        if server_id in verified:
            out.newest_verified.append((label, _ts(verified[server_id])))
        if server_id in objectives:
            out.objective.append((label, objectives[server_id]))
        covered = server_id in objectives
        out.protected.append((label, 1.0 if covered and server_id in newest else 0.0))

    for name, at in session.execute(
        select(Mailbox.name, func.max(MailboxRestorePoint.captured_at))
        .join(MailboxRestorePoint, MailboxRestorePoint.mailbox_id == Mailbox.id)
        .where(MailboxRestorePoint.status == RestorePointStatus.AVAILABLE)
        .group_by(Mailbox.name)
    ):
        out.mailbox_newest.append(((name,), _ts(at)))

    for kind, state, count in session.execute(
        select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
    ):
        out.jobs.append(((str(kind), str(state)), float(count)))
    finished = select(Job.kind, Job.state, Job.started_at, Job.finished_at).where(
        Job.started_at.is_not(None), Job.finished_at.is_not(None)
    )
    sums: dict[tuple[str, str], list[float]] = {}
    for kind, state, started, ended in session.execute(finished):
        entry = sums.setdefault((str(kind), str(state)), [0.0, 0.0])
        entry[0] += max(0.0, _ts(ended) - _ts(started))
        entry[1] += 1
    for labels, (total, count) in sorted(sums.items()):
        out.duration_sum.append((labels, total))
        out.duration_count.append((labels, count))
    for kind, read in session.execute(
        select(Job.kind, func.sum(Job.bytes_done))
        .where(Job.state == JobState.SUCCEEDED)
        .group_by(Job.kind)
    ):
        out.bytes_read.append(((str(kind),), float(read or 0)))

    for name, usage in session.execute(
        select(Connection.name, RepositoryUsage).join(
            RepositoryUsage, RepositoryUsage.connection_id == Connection.id
        )
    ):
        label = (name,)
        out.stored.append((label, float(usage.stored_bytes)))
        out.logical.append((label, float(usage.logical_bytes)))
        out.measured.append((label, _ts(usage.measured_at)))
        free = getattr(usage, "free_bytes", None)
        if free is not None:
            out.free.append((label, float(free)))

    for name, beat in session.execute(select(Proxy.name, Proxy.last_heartbeat_at)):
        out.heartbeats.append(((name,), _ts(beat)))
    return out
