"""Read-side queries the pages share: counts in one GROUP BY each, names in one query."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import (
    Connection,
    ExchangeDatabase,
    ExchangeServer,
    Job,
    Policy,
    PolicyTarget,
    Proxy,
    RestorePoint,
    RestorePointCopy,
)
from app.db.types import utcnow
from app.domain.connections import ConnectionKind, ConnectionStatus
from app.domain.jobs import JobKind, JobState
from app.domain.protection import (
    WITHOUT_COPIES,
    CopyLocation,
    DatabaseLayout,
    RestorePointStatus,
    Verification,
)
from app.domain.rpo import DayCompliance, Protected, compliance_by_day, objective_s
from app.protection.catalog import captures

PROXY_FRESH_S = 120
# The newest restore point is "near the objective" from this fraction of the RPO on.
RPO_WARNING_FRACTION = 0.8
RPO_ORDER = ("breached", "warning", "pending", "ok")


def _grouped(session: Session, column, *where) -> dict[Any, int]:
    query = select(column, func.count()).group_by(column)
    for clause in where:
        query = query.where(clause)
    return {key: int(n) for key, n in session.execute(query).all()}


def _ordered(counts: dict[Any, int], order: Iterable[Any]) -> list[tuple[Any, int]]:
    return [(key, counts.get(key, 0)) for key in order]


def overview_counts(session: Session) -> dict[str, Any]:
    since = utcnow() - timedelta(hours=24)
    connections = _grouped(session, Connection.status)
    layouts = _grouped(session, ExchangeDatabase.layout)
    policies = _grouped(session, Policy.enabled)
    jobs = _grouped(session, Job.state, Job.created_at >= since)
    points = _grouped(
        session, RestorePoint.verification, RestorePoint.status.notin_(WITHOUT_COPIES)
    )
    return {
        "connections": _ordered(connections, ConnectionStatus),
        "connections_total": sum(connections.values()),
        "servers": int(session.scalar(select(func.count(ExchangeServer.id))) or 0),
        "layouts": _ordered(layouts, DatabaseLayout),
        "databases_total": sum(layouts.values()),
        "policies_enabled": policies.get(True, 0),
        "policies_disabled": policies.get(False, 0),
        "jobs": _ordered(jobs, JobState),
        "jobs_total": sum(jobs.values()),
        "points": _ordered(points, Verification),
        "points_total": sum(points.values()),
        "servers_immutable": servers_with_immutable_copy(session),
    }


def servers_with_immutable_copy(session: Session) -> int:
    """Protected servers with a restore point whose copy in an immutable repository is still
    locked (its copy's time plus the repository's lock period lies ahead). Two queries at
    most, whatever the number of repositories."""
    now = utcnow()
    days = {
        conn_id: (options or {}).get("immutable_days")
        for conn_id, options in session.execute(
            select(Connection.id, Connection.options).where(
                Connection.kind == ConnectionKind.REPOSITORY
            )
        )
    }
    days = {k: v for k, v in days.items() if isinstance(v, int) and v > 0}
    if not days:
        return 0
    rows = session.execute(
        select(
            RestorePoint.server_id,
            RestorePointCopy.connection_id,
            func.max(RestorePointCopy.created_at),
        )
        .join(RestorePointCopy, RestorePointCopy.restore_point_id == RestorePoint.id)
        .where(
            RestorePointCopy.connection_id.in_(days),
            RestorePointCopy.live,
            RestorePointCopy.created_at > now - timedelta(days=max(days.values())),
            RestorePoint.server_id.is_not(None),
        )
        .group_by(RestorePoint.server_id, RestorePointCopy.connection_id)
    )
    servers = {
        server_id
        for server_id, conn_id, created in rows
        if _aware(created) + timedelta(days=days[conn_id]) > _aware(now)
    }
    return len(servers)


def recent_jobs(
    session: Session, limit: int = 10, since: datetime | None = None, **filters: Any
) -> list[Any]:
    """Jobs newest first with their policy's and server's names, in one query."""
    query = (
        select(Job, Policy.name.label("policy_name"), ExchangeServer.name.label("server_name"))
        .outerjoin(Policy, Policy.id == Job.policy_id)
        .outerjoin(ExchangeServer, ExchangeServer.id == Job.server_id)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit)
    )
    if since is not None:
        query = query.where(Job.created_at >= since)
    for name, value in filters.items():
        if value is not None:
            query = query.where(getattr(Job, name) == value)
    return list(session.execute(query).all())


def proxies(session: Session) -> list[dict[str, Any]]:
    now = utcnow()
    rows = session.scalars(select(Proxy).order_by(Proxy.name)).all()
    return [
        {
            "proxy": p,
            "fresh": (now - p.last_heartbeat_at).total_seconds() <= PROXY_FRESH_S,
        }
        for p in rows
    ]


def names(session: Session, model, ids: Iterable[int | None]) -> dict[int, str]:
    """``{id: name}`` for the given ids of a model with a ``name`` column, in one query."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return dict(session.execute(select(model.id, model.name).where(model.id.in_(wanted))).all())


def child_jobs(session: Session, job: Job) -> list[Any]:
    """The jobs a job queued (a policy-wide backup's per-target jobs)."""
    return list(
        session.execute(
            select(Job, ExchangeServer.name.label("server_name"))
            .outerjoin(ExchangeServer, ExchangeServer.id == Job.server_id)
            .where(Job.parent_id == job.id)
            .order_by(Job.id)
            .limit(200)
        ).all()
    )


def revertible(point: RestorePoint) -> bool:
    """A VM can be reverted to the restore point: it is available and its VM snapshot is live."""
    return (
        point.status == RestorePointStatus.AVAILABLE
        and point.live_copy(CopyLocation.VM_SNAPSHOT) is not None
    )


# -- recovery point objective, measured -------------------------------------------------------


def rpo_status(age_s: float | None, objective_s: float | None) -> str:
    if objective_s is None or age_s is None:
        return "pending"
    if age_s > objective_s:
        return "breached"
    if age_s >= objective_s * RPO_WARNING_FRACTION:
        return "warning"
    return "ok"


@dataclass
class PolicyRpo:
    policy_id: int
    name: str
    enabled: bool
    objective_s: float | None
    from_schedule: bool  # the objective follows from a cron schedule, not a stated RPO
    newest: datetime | None
    age_s: float | None
    status: str


@dataclass
class ServerRpo:
    server_id: int
    name: str
    newest: datetime | None
    age_s: float | None
    status: str
    policies: list[PolicyRpo] = field(default_factory=list)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def rpo_by_server(session: Session, limit: int = 100) -> tuple[list[ServerRpo], int]:
    """Per server, the age of its newest available restore point against each enabled policy's
    objective; worst first. Three queries, whatever the number of servers and points."""
    now = _aware(utcnow())
    servers = session.execute(select(ExchangeServer.id, ExchangeServer.name)).all()
    covering = session.execute(
        select(
            PolicyTarget.server_id,
            Policy.id,
            Policy.name,
            Policy.enabled,
            Policy.rpo_minutes,
            Policy.schedule_cron,
            Policy.created_at,
        )
        .join(Policy, Policy.id == PolicyTarget.policy_id)
        .distinct()
    ).all()
    newest: dict[tuple[int, int | None], datetime] = {}
    latest_of: dict[int, datetime] = {}
    # Mailbox backups count as the others do (one server, all of its protection).
    for (policy_id, server_id, _database_id), at in captures.newest(session).items():
        if server_id is None:
            continue
        if (server_id, policy_id) not in newest or newest[(server_id, policy_id)] < at:
            newest[(server_id, policy_id)] = at
        if server_id not in latest_of or latest_of[server_id] < at:
            latest_of[server_id] = at
    by_server: dict[int, list[PolicyRpo]] = {}
    schedules: dict[str, float | None] = {}
    for server_id, pid, pname, enabled, rpo_minutes, cron, created in covering:
        objective = objective_s(rpo_minutes, cron, now, schedules)
        from_schedule = rpo_minutes is None
        point = newest.get((server_id, pid))
        age = (now - point).total_seconds() if point else None
        status = rpo_status(age, objective)
        if point is None and objective is not None and created is not None:
            # Nothing yet: breached once the policy has existed longer than its objective.
            waited = (now - _aware(created)).total_seconds()
            status = "breached" if waited > objective else "pending"
        by_server.setdefault(server_id, []).append(
            PolicyRpo(pid, pname, bool(enabled), objective, from_schedule, point, age, status)
        )
    rows = []
    for server_id, name in servers:
        policies = sorted(by_server.get(server_id, []), key=lambda p: p.name)
        latest = latest_of.get(server_id)
        live = [p for p in policies if p.enabled]
        # The worst real state: a policy still waiting for its first point does not hide
        # (nor stand for) what the server's other protection measures.
        real = [p.status for p in live if p.status != "pending"] or [p.status for p in live]
        status = min(real, key=RPO_ORDER.index) if real else "unprotected"
        rows.append(
            ServerRpo(
                server_id,
                name,
                latest,
                (now - latest).total_seconds() if latest else None,
                status,
                policies,
            )
        )
    order = ("breached", "unprotected", "warning", "pending", "ok")
    rows.sort(key=lambda r: (order.index(r.status), r.name))
    return rows[:limit], len(rows)


def rpo_history(session: Session, days: int = 14) -> list[DayCompliance]:
    """RPO compliance per day over the last ``days`` days, across every enabled policy's
    servers. Two queries; expired restore points count for the time they existed."""
    return rpo_chart(session, days)[0]


def rpo_chart(session: Session, days: int = 14) -> tuple[list[DayCompliance], datetime | None]:
    """:func:`rpo_history`, plus when protection began (the earliest enabled policy), so the
    chart can start there and, before its first sample, say when that comes."""
    now = _aware(utcnow())
    covering = session.execute(
        select(
            PolicyTarget.server_id,
            Policy.id,
            Policy.rpo_minutes,
            Policy.schedule_cron,
            Policy.created_at,
        )
        .join(Policy, Policy.id == PolicyTarget.policy_id)
        .where(Policy.enabled.is_(True))
        .distinct()
    ).all()
    if not covering:
        return [], None
    began = min((_aware(row[4]) for row in covering if row[4] is not None), default=None)
    taken: dict[tuple[int, int], list[datetime]] = {}
    for server_id, policy_id, at in captures.every(session, {row[1] for row in covering}):
        taken.setdefault((server_id, policy_id), []).append(at)
    protected, schedules = [], {}
    for server_id, policy_id, rpo_minutes, cron, created in covering:
        objective = objective_s(rpo_minutes, cron, now, schedules)
        if objective is None or created is None:
            continue
        protected.append(
            Protected(taken.get((server_id, policy_id), []), objective, _aware(created))
        )
    return compliance_by_day(protected, now, days=days), began


def audit_object_names(session: Session, events: Iterable[Any]) -> dict[tuple[str, str], str]:
    """``{(object_type, object_id): name}`` for the named things audit events point at: one
    query per kind of object on the page, so the log shows names beside ids."""
    from app.db.models import ApiToken, Connection, ExchangeDatabase, Policy, User

    named = {
        "connection": (Connection, Connection.name),
        "policy": (Policy, Policy.name),
        "server": (ExchangeServer, ExchangeServer.name),
        "database": (ExchangeDatabase, ExchangeDatabase.name),
        "user": (User, User.username),
        "token": (ApiToken, ApiToken.name),
    }
    wanted: dict[str, set[int]] = {}
    for event in events:
        if event.object_type in named and (event.object_id or "").isdigit():
            wanted.setdefault(event.object_type, set()).add(int(event.object_id))
    found: dict[tuple[str, str], str] = {}
    for kind, ids in wanted.items():
        model, column = named[kind]
        for object_id, name in session.execute(select(model.id, column).where(model.id.in_(ids))):
            found[(kind, str(object_id))] = name
    return found


@dataclass
class ServerSummary:
    """What the servers list shows per server: the last backup and what protects it now."""

    last_backup: Job | None
    newest_point: RestorePoint | None
    rpo: ServerRpo | None


def server_summaries(session: Session, ids: list[int]) -> dict[int, ServerSummary]:
    """Per server on the page: its newest backup job, its newest available restore point and
    its protection state (the overview's rule, so the two pages agree). Four queries."""
    if not ids:
        return {}
    newest_job = (
        select(func.max(Job.id))
        .where(Job.kind == JobKind.BACKUP, Job.server_id.in_(ids))
        .group_by(Job.server_id)
    )
    jobs = {j.server_id: j for j in session.scalars(select(Job).where(Job.id.in_(newest_job)))}
    newest_at = (
        select(RestorePoint.server_id, func.max(RestorePoint.captured_at).label("at"))
        .where(RestorePoint.server_id.in_(ids), RestorePoint.status == RestorePointStatus.AVAILABLE)
        .group_by(RestorePoint.server_id)
        .subquery()
    )
    points: dict[int, RestorePoint] = {}
    for point in session.scalars(
        select(RestorePoint)
        .join(
            newest_at,
            (RestorePoint.server_id == newest_at.c.server_id)
            & (RestorePoint.captured_at == newest_at.c.at),
        )
        .where(RestorePoint.status == RestorePointStatus.AVAILABLE)
    ):
        points.setdefault(point.server_id, point)
    rows, _ = rpo_by_server(session, limit=1_000_000)
    states = {row.server_id: row for row in rows if row.server_id in set(ids)}
    return {i: ServerSummary(jobs.get(i), points.get(i), states.get(i)) for i in ids}


@dataclass
class JobRun:
    job_id: int
    finished_at: datetime
    seconds: float
    mib_per_s: float | None
    state: str


def policy_job_history(session: Session, policy_id: int, limit: int = 30) -> list[JobRun]:
    """Duration and throughput of a policy's finished per-server backup jobs, oldest first
    (the newest ``limit``), for its history chart. One query."""
    rows = session.execute(
        select(Job.id, Job.started_at, Job.finished_at, Job.bytes_done, Job.state)
        .where(
            Job.policy_id == policy_id,
            Job.kind == JobKind.BACKUP,
            Job.parent_id.is_not(None),
            Job.started_at.is_not(None),
            Job.finished_at.is_not(None),
        )
        .order_by(Job.finished_at.desc())
        .limit(limit)
    ).all()
    runs = []
    for job_id, started, finished, done, state in reversed(rows):
        seconds = max(0.0, (_aware(finished) - _aware(started)).total_seconds())
        rate = done / seconds / (1 << 20) if seconds > 0 and done else None
        runs.append(JobRun(job_id, _aware(finished), seconds, rate, str(state)))
    return runs
