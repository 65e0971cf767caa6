"""Reading the audit log (it is written by every change, never through the API)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from app.api import API_PREFIX
from app.api.deps import DbSession, require
from app.api.pagination import Page, PageWindow, paginate
from app.api.schemas.catalog import AuditEventOut
from app.db.models import AuditEvent
from app.security.roles import Permission

router = APIRouter(prefix=API_PREFIX + "/audit-events", tags=["audit"])


@router.get("", response_model=Page[AuditEventOut], summary="Search the audit log")
def list_audit_events(
    session: DbSession,
    _=require(Permission.READ_AUDIT),
    actor: str | None = Query(default=None, max_length=64),
    action: str | None = Query(
        default=None,
        max_length=64,
        description="Exact, or a prefix ending in '.' such as 'connection.'",
    ),
    object_type: str | None = Query(default=None, max_length=32),
    object_id: str | None = Query(default=None, max_length=64),
    outcome: str | None = Query(default=None, max_length=16),
    since: datetime | None = None,
    until: datetime | None = None,
    sort: str | None = Query(default=None, description="at, action, actor"),
    window: PageWindow = Depends(),
):
    query = select(AuditEvent)
    if action:
        query = query.where(
            AuditEvent.action.startswith(action, autoescape=True)
            if action.endswith(".")
            else AuditEvent.action == action
        )
    for column, value in (
        (AuditEvent.actor, actor),
        (AuditEvent.object_type, object_type),
        (AuditEvent.object_id, object_id),
        (AuditEvent.outcome, outcome),
    ):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    return paginate(
        session,
        query,
        window,
        sort,
        sortable={"at": AuditEvent.at, "action": AuditEvent.action, "actor": AuditEvent.actor},
        default_sort="-at",
    )
