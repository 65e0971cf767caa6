"""Read-side queries the pages share: counts in one GROUP BY each, names in one query."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import (
    Connection,
    ExchangeDatabase,
    ExchangeServer,
    Job,
    Policy,
    Proxy,
    RestorePoint,
)
from app.db.types import utcnow
from app.domain.connections import ConnectionStatus
from app.domain.jobs import JobState
from app.domain.protection import DatabaseLayout, RestorePointStatus, Verification

PROXY_FRESH_S = 120


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
        session, RestorePoint.verification, RestorePoint.status != RestorePointStatus.EXPIRED
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
    }


def recent_jobs(session: Session, limit: int = 10, **filters: Any) -> list[Any]:
    """Jobs newest first with their policy's and server's names, in one query."""
    query = (
        select(Job, Policy.name.label("policy_name"), ExchangeServer.name.label("server_name"))
        .outerjoin(Policy, Policy.id == Job.policy_id)
        .outerjoin(ExchangeServer, ExchangeServer.id == Job.server_id)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit)
    )
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
