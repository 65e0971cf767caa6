"""Legal holds: nothing they cover expires until they are released."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from app.api import API_PREFIX
from app.api.deps import DbSession, Reader, require
from app.api.pagination import Page, PageWindow, paginate
from app.api.problems import conflict, found, invalid
from app.api.schemas.catalog import LegalHoldCreate, LegalHoldOut
from app.audit import record
from app.db.models import ExchangeServer, LegalHold, RestorePoint
from app.db.types import utcnow
from app.security.roles import Permission

router = APIRouter(prefix=API_PREFIX + "/legal-holds", tags=["legal holds"])
Holder = require(Permission.MANAGE_HOLDS)
SORTABLE = {"name": LegalHold.name, "created_at": LegalHold.created_at}


@router.get("", response_model=Page[LegalHoldOut], summary="List legal holds")
def list_holds(
    session: DbSession,
    _: Reader,
    active: bool | None = Query(default=None, description="Only unreleased (true) or released"),
    sort: str | None = None,
    window: PageWindow = Depends(),
):
    query = select(LegalHold)
    if active is True:
        query = query.where(LegalHold.released_at.is_(None))
    elif active is False:
        query = query.where(LegalHold.released_at.is_not(None))
    return paginate(session, query, window, sort, sortable=SORTABLE, default_sort="-created_at")


@router.post("", response_model=LegalHoldOut, status_code=201, summary="Place a legal hold")
def create_hold(body: LegalHoldCreate, session: DbSession, principal=Holder):
    if session.scalar(select(LegalHold.id).where(LegalHold.name == body.name)):
        raise conflict(f"a legal hold named '{body.name}' already exists")
    if body.server_id is not None and session.get(ExchangeServer, body.server_id) is None:
        raise invalid(f"Exchange server {body.server_id} does not exist", "server_id")
    if (
        body.restore_point_id is not None
        and session.get(RestorePoint, body.restore_point_id) is None
    ):
        raise invalid(f"restore point {body.restore_point_id} does not exist", "restore_point_id")
    hold = LegalHold(**body.model_dump(), created_by=principal.actor.name)
    session.add(hold)
    session.flush()
    record(
        session,
        principal.actor,
        "legal_hold.create",
        "legal_hold",
        hold.id,
        name=hold.name,
        scope=hold.scope,
    )
    return hold


@router.get("/{hold_id}", response_model=LegalHoldOut, summary="Read a legal hold")
def read_hold(hold_id: int, session: DbSession, _: Reader):
    return found(session.get(LegalHold, hold_id), "legal hold", hold_id)


@router.post("/{hold_id}/release", response_model=LegalHoldOut, summary="Release a legal hold")
def release_hold(hold_id: int, session: DbSession, principal=Holder):
    hold = found(session.get(LegalHold, hold_id), "legal hold", hold_id)
    if hold.released_at is not None:
        raise conflict(f"legal hold '{hold.name}' was already released")
    hold.released_at = utcnow()
    hold.released_by = principal.actor.name
    record(session, principal.actor, "legal_hold.release", "legal_hold", hold.id, name=hold.name)
    return hold
