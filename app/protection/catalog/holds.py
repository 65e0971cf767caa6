"""Which unreleased legal holds cover which restore points (one query for many)."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.db.models import LegalHold, RestorePoint


def holds_by_point(session: Session, points: list[RestorePoint]) -> dict[int, list[str]]:
    ids = [p.id for p in points]
    servers = {p.server_id for p in points if p.server_id is not None}
    holds = session.scalars(
        select(LegalHold).where(
            LegalHold.released_at.is_(None),
            or_(LegalHold.restore_point_id.in_(ids), LegalHold.server_id.in_(servers)),
        )
    ).all()
    result: dict[int, list[str]] = {p.id: [] for p in points}
    for p in points:
        for h in holds:
            if h.restore_point_id == p.id or (h.scope == "server" and h.server_id == p.server_id):
                result[p.id].append(h.name)
    return result
