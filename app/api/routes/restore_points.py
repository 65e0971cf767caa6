"""The restore-point catalog. Jobs create restore points; operators read, keep or remove them."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api import API_PREFIX
from app.api.deps import DbSession, Reader, require
from app.api.pagination import Page, PageWindow, paginate
from app.api.problems import conflict, found
from app.api.schemas.catalog import RestorePointOut, RestorePointUpdate
from app.audit import record
from app.db.models import RestorePoint
from app.db.types import utcnow
from app.domain.protection import ProtectionMethod, RestorePointStatus, Verification
from app.domain.retention import removal_blocker
from app.protection.catalog.holds import holds_by_point
from app.security.roles import Permission

router = APIRouter(prefix=API_PREFIX + "/restore-points", tags=["restore points"])
SORTABLE = {
    "captured_at": RestorePoint.captured_at,
    "size_bytes": RestorePoint.size_bytes,
    "status": RestorePoint.status,
}


def _out(
    points: list[RestorePoint], holds: dict[int, list[str]], session: Session | None = None
) -> list[RestorePointOut]:
    from app.repository.connection import copy_locks

    out = []
    for p in points:
        item = RestorePointOut.model_validate(p)
        item.on_hold = bool(holds.get(p.id))
        locks = copy_locks(session, p) if session is not None else {}
        for copy in item.copies:
            copy.immutable_until = locks.get(copy.id)
        item.immutable_until = max(locks.values(), default=None)
        out.append(item)
    return out


def get_point(session: Session, point_id: int) -> RestorePoint:
    return found(session.get(RestorePoint, point_id), "restore point", point_id)


@router.get("", response_model=Page[RestorePointOut], summary="List restore points")
def list_restore_points(
    session: DbSession,
    _: Reader,
    server_id: int | None = None,
    policy_id: int | None = None,
    database_id: int | None = None,
    method: ProtectionMethod | None = None,
    status: RestorePointStatus | None = None,
    verification: Verification | None = None,
    since: datetime | None = Query(default=None, description="Captured at or after"),
    until: datetime | None = Query(default=None, description="Captured before"),
    sort: str | None = Query(default=None, description="captured_at, size_bytes, status"),
    window: PageWindow = Depends(),
):
    query = select(RestorePoint)
    for column, value in (
        (RestorePoint.server_id, server_id),
        (RestorePoint.policy_id, policy_id),
        (RestorePoint.database_id, database_id),
        (RestorePoint.method, method),
        (RestorePoint.status, status),
        (RestorePoint.verification, verification),
    ):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(RestorePoint.captured_at >= since)
    if until is not None:
        query = query.where(RestorePoint.captured_at < until)
    page = paginate(session, query, window, sort, sortable=SORTABLE, default_sort="-captured_at")
    page["items"] = _out(page["items"], holds_by_point(session, page["items"]), session)
    return page


@router.get("/{point_id}", response_model=RestorePointOut, summary="Read a restore point")
def read_restore_point(point_id: int, session: DbSession, _: Reader):
    point = get_point(session, point_id)
    return _out([point], holds_by_point(session, [point]), session)[0]


@router.patch(
    "/{point_id}", response_model=RestorePointOut, summary="Change a restore point's expiry"
)
def update_restore_point(
    point_id: int,
    body: RestorePointUpdate,
    session: DbSession,
    principal=require(Permission.MANAGE_PROTECTION),
):
    point = get_point(session, point_id)
    point.expires_at = body.expires_at
    record(
        session,
        principal.actor,
        "restore_point.update",
        "restore_point",
        point.id,
        expires_at=None if body.expires_at is None else body.expires_at.isoformat(),
    )
    return _out([point], holds_by_point(session, [point]), session)[0]


@router.delete("/{point_id}", status_code=204, summary="Expire a restore point now")
def delete_restore_point(
    point_id: int, session: DbSession, principal=require(Permission.MANAGE_PROTECTION)
):
    from app.repository.connection import copy_locks

    point = get_point(session, point_id)
    blocker = removal_blocker(
        utcnow(), point.retain_until, holds_by_point(session, [point])[point.id]
    )
    locks = copy_locks(session, point)
    if blocker is None and locks:
        # For every role, admin included: the lock is what a stolen account cannot undo.
        blocker = f"it is immutable until {max(locks.values()):%Y-%m-%d %H:%M} UTC"
    if blocker:
        record(
            session,
            principal.actor,
            "restore_point.delete",
            "restore_point",
            point.id,
            outcome="refused",
            reason=blocker,
        )
        session.commit()
        raise conflict(f"restore point {point_id} cannot be removed: {blocker}")
    # Marked expired; the expire job removes its copies (snapshots, manifests) and the row.
    point.status = RestorePointStatus.EXPIRED
    point.expires_at = utcnow()
    record(session, principal.actor, "restore_point.delete", "restore_point", point.id)
    return Response(status_code=204)
