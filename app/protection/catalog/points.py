"""The catalog's shared restore-point query: a target's recent points, newest first (where a
backup finds its previous point). When each target was last captured is
app/protection/catalog/captures.py's."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.db.models import RestorePoint
from app.domain.protection import ProtectionMethod, RestorePointStatus

ANY: Any = object()  # a filter left open (e.g. every database of a server)

NEWEST_FIRST = (RestorePoint.captured_at.desc(), RestorePoint.id.desc())


def _target(
    query: Select, *, server_id: int, database_id: Any = ANY, policy_id: int | None = None
) -> Select:
    query = query.where(RestorePoint.server_id == server_id)
    if database_id is not ANY:
        query = query.where(
            RestorePoint.database_id.is_(None)
            if database_id is None
            else RestorePoint.database_id == database_id
        )
    if policy_id is not None:
        query = query.where(RestorePoint.policy_id == policy_id)
    return query


def recent_points(
    session: Session,
    *,
    server_id: int,
    database_id: Any = ANY,
    policy_id: int | None = None,
    method: ProtectionMethod | None = None,
    limit: int | None = None,
) -> list[RestorePoint]:
    """A target's available restore points, newest first (``database_id`` None: the points
    of the whole server; ANY: of the server and every database on it)."""
    query = _target(
        select(RestorePoint), server_id=server_id, database_id=database_id, policy_id=policy_id
    ).where(RestorePoint.status == RestorePointStatus.AVAILABLE)
    if method is not None:
        query = query.where(RestorePoint.method == method)
    return list(session.scalars(query.order_by(*NEWEST_FIRST).limit(limit)))
