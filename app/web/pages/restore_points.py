"""The restore-point catalog: list with filters, one restore point, reverting to it, and
restoring it as a new VM."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import RedirectResponse, Response

from app.api.problems import Problem
from app.api.routes.jobs import create_job
from app.api.routes.restore_points import SORTABLE as POINT_SORTABLE
from app.api.routes.restore_points import get_point
from app.api.schemas.jobs import JobCreate
from app.db.models import (
    Connection,
    ExchangeDatabase,
    ExchangeServer,
    Job,
    LegalHold,
    Policy,
    RestorePoint,
    RestorePointCopy,
)
from app.db.types import utcnow
from app.domain.jobs import JobKind
from app.domain.protection import Consistency, CopyLocation, RestorePointStatus, Verification
from app.protection.catalog.holds import holds_by_point
from app.protection.restores import whole_vm as restore_whole_vm
from app.security.roles import Permission
from app.web.context import Ctx, Form, signed_in
from app.web.errors import WebRoute
from app.web.forms import checkbox, text
from app.web.paging import enum_or_none, int_or_none, page_of
from app.web.queries import names, revertible
from app.web.templating import flash, render

router = APIRouter(route_class=WebRoute)
PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}


@router.get("/restore-points")
def restore_point_list(
    request: Request,
    server: str | None = None,
    database: str | None = None,
    policy: str | None = None,
    consistency: str | None = None,
    location: str | None = None,
    verification: str | None = None,
    period: str | None = None,
    page: int = 1,
) -> Response:
    with signed_in(request) as ctx:
        server_id, policy_id = int_or_none(server), int_or_none(policy)
        database_id = int_or_none(database)
        chosen = {
            "consistency": enum_or_none(Consistency, consistency),
            "location": enum_or_none(CopyLocation, location),
            "verification": enum_or_none(Verification, verification),
        }
        period = period if period in PERIODS else None
        query = select(RestorePoint)
        if server_id is not None:
            query = query.where(RestorePoint.server_id == server_id)
        if database_id is not None:
            query = query.where(RestorePoint.database_id == database_id)
        if policy_id is not None:
            query = query.where(RestorePoint.policy_id == policy_id)
        if chosen["consistency"] is not None:
            query = query.where(RestorePoint.consistency == chosen["consistency"])
        if chosen["verification"] is not None:
            query = query.where(RestorePoint.verification == chosen["verification"])
        if chosen["location"] is not None:
            query = query.where(
                RestorePoint.copies.any(
                    (RestorePointCopy.location == chosen["location"]) & RestorePointCopy.live
                )
            )
        if period:
            query = query.where(RestorePoint.captured_at >= utcnow() - PERIODS[period])
        items, pager = page_of(
            ctx.session,
            query,
            page=page,
            sortable=POINT_SORTABLE,
            default_sort="-captured_at",
            params={
                "server": server_id,
                "database": database_id,
                "policy": policy_id,
                "period": period,
                **{k: v and v.value for k, v in chosen.items()},
            },
        )
        servers = names(ctx.session, ExchangeServer, (p.server_id for p in items))
        filters = {
            "server": server_id,
            "database": database_id,
            "policy": policy_id,
            "period": period,
            **chosen,
        }
        return render(
            request,
            "restore_points/list.html",
            {
                "section": "restore_points",
                "items": items,
                "pager": pager,
                "filters": filters,
                "filtered": any(v is not None for v in filters.values()),
                "server_choices": ctx.session.execute(
                    select(ExchangeServer.id, ExchangeServer.name).order_by(ExchangeServer.name)
                ).all(),
                "database_choices": ctx.session.execute(
                    select(ExchangeDatabase.id, ExchangeServer.name, ExchangeDatabase.name)
                    .join(ExchangeServer, ExchangeServer.id == ExchangeDatabase.server_id)
                    .order_by(ExchangeServer.name, ExchangeDatabase.name)
                ).all(),
                "policy_choices": ctx.session.execute(
                    select(Policy.id, Policy.name).order_by(Policy.name)
                ).all(),
                "consistencies": list(Consistency),
                "locations": list(CopyLocation),
                "verifications": list(Verification),
                "periods": {"24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days"},
                "holds": holds_by_point(ctx.session, items) if items else {},
                "revertible": {p.id for p in items if revertible(p)},
                "servers": servers,
                "groups": _grouped_by_server(items, servers),
                "databases": names(ctx.session, ExchangeDatabase, (p.database_id for p in items)),
                "policies": names(ctx.session, Policy, (p.policy_id for p in items)),
            },
            user=ctx.user,
        )


def _grouped_by_server(items: list[RestorePoint], servers: dict[int, str]):
    """The page's points per server (servers by name), each group newest first, with the
    live copy locations (one badge each) and the bytes the repository copies store."""
    groups: dict[str, list] = {}
    for point in items:
        live = point.live_copies()
        locations = sorted({c.location for c in live}, key=list(CopyLocation).index)
        stored = sum(c.size_bytes for c in live if c.location == CopyLocation.REPOSITORY)
        name = servers.get(point.server_id, "—") if point.server_id else "—"
        groups.setdefault(name, []).append((point, locations, stored))
    return sorted(groups.items())


def _point_context(ctx: Ctx, point: RestorePoint) -> dict:
    server = ctx.session.get(ExchangeServer, point.server_id) if point.server_id else None
    holds = ctx.session.scalars(
        select(LegalHold).where(
            LegalHold.name.in_(holds_by_point(ctx.session, [point])[point.id] or [""])
        )
    ).all()
    return {
        "section": "restore_points",
        "point": point,
        "server": server,
        "database": ctx.session.get(ExchangeDatabase, point.database_id)
        if point.database_id
        else None,
        "policy": ctx.session.get(Policy, point.policy_id) if point.policy_id else None,
        "job": ctx.session.get(Job, point.job_id) if point.job_id else None,
        "holds": holds,
        "connections": names(ctx.session, Connection, (c.connection_id for c in point.copies)),
        "can_revert": revertible(point),
        "offers": restore_whole_vm.offers(point),
        "snapshot": point.live_copy(CopyLocation.VM_SNAPSHOT),
    }


@router.get("/restore-points/{point_id}")
def restore_point_detail(request: Request, point_id: int) -> Response:
    with signed_in(request) as ctx:
        point = get_point(ctx.session, point_id)
        context = _point_context(ctx, point)
        # Restores of this point only (the job names it in its parameters).
        context["restores"] = [
            r
            for r in ctx.session.scalars(
                select(Job)
                .where(Job.kind == JobKind.RESTORE, Job.server_id == point.server_id)
                .order_by(Job.id.desc())
                .limit(50)
            )
            if (r.params or {}).get("restore_point_id") == point.id
        ]
        return render(request, "restore_points/detail.html", context, user=ctx.user)


def _revert_page(
    ctx: Ctx, point: RestorePoint, error: str | None = None, typed: str = "", status_code=200
) -> Response:
    context = _point_context(ctx, point)
    context.update(error=error, typed=typed)
    return render(
        ctx.request, "restore_points/revert.html", context, user=ctx.user, status_code=status_code
    )


@router.get("/restore-points/{point_id}/revert")
def revert_confirm(request: Request, point_id: int) -> Response:
    with signed_in(request, Permission.RUN_RESTORE) as ctx:
        return _revert_page(ctx, get_point(ctx.session, point_id))


@router.post("/restore-points/{point_id}/revert")
def revert(request: Request, point_id: int, form: Form) -> Response:
    """Start the restore job; the API checks the typed name (params.confirm) and audits."""
    with signed_in(request, Permission.RUN_RESTORE, form=form, check_form=True) as ctx:
        point = get_point(ctx.session, point_id)
        typed = text(form, "confirm")[:128]
        if point.status != RestorePointStatus.AVAILABLE or not revertible(point):
            return _revert_page(
                ctx,
                point,
                "This restore point has no VM snapshot left to revert to.",
                typed,
                status_code=409,
            )
        body = JobCreate(
            kind=JobKind.RESTORE,
            restore_point_id=point.id,
            params={"confirm": typed, "mode": "revert"},
        )
        try:
            job = create_job(body, ctx.session, ctx.principal)
        except Problem as exc:
            ctx.session.rollback()
            point = get_point(ctx.session, point_id)
            message = exc.detail[:1].upper() + exc.detail[1:]
            server = ctx.session.get(ExchangeServer, point.server_id) if point.server_id else None
            if "params.confirm" in exc.detail and server is not None:
                # The API's refusal, in the words of this form.
                message = (
                    f"“{typed}” is not the server's name, so nothing was started. "
                    if typed
                    else "Nothing was started. "
                ) + f"Type {server.name} exactly to revert it."
            return _revert_page(ctx, point, message, typed, status_code=exc.status)
        flash(
            request,
            f"Revert to the restore point of {point.captured_at:%Y-%m-%d %H:%M} UTC queued.",
            "info",
        )
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)


# -- revert to a new VM -----------------------------------------------------------------------


def _new_vm_page(
    ctx: Ctx,
    point: RestorePoint,
    error: str | None = None,
    values: dict | None = None,
    status_code: int = 200,
) -> Response:
    context = _point_context(ctx, point)
    server = context["server"]
    default_name = f"{server.name}-restored" if server else ""
    context.update(
        error=error, values=values or {"name": default_name, "confirm": "", "power_on": False}
    )
    return render(
        ctx.request, "restore_points/new_vm.html", context, user=ctx.user, status_code=status_code
    )


@router.get("/restore-points/{point_id}/new-vm")
def new_vm_form(request: Request, point_id: int) -> Response:
    with signed_in(request, Permission.RUN_RESTORE) as ctx:
        return _new_vm_page(ctx, get_point(ctx.session, point_id))


@router.post("/restore-points/{point_id}/new-vm")
def new_vm(request: Request, point_id: int, form: Form) -> Response:
    """Start a restore as a new VM; the API checks the name typed twice and audits."""
    with signed_in(request, Permission.RUN_RESTORE, form=form, check_form=True) as ctx:
        point = get_point(ctx.session, point_id)
        values = {
            "name": text(form, "name")[:128],
            "confirm": text(form, "confirm")[:128],
            "power_on": checkbox(form, "power_on"),
        }
        if point.status != RestorePointStatus.AVAILABLE or not revertible(point):
            return _new_vm_page(
                ctx,
                point,
                "This restore point has no VM snapshot left to make a VM from.",
                values,
                status_code=409,
            )
        body = JobCreate(
            kind=JobKind.RESTORE,
            restore_point_id=point.id,
            params={
                "mode": "new_vm",
                "new_vm_name": values["name"],
                "confirm": values["confirm"],
                "power_on": values["power_on"],
            },
        )
        try:
            job = create_job(body, ctx.session, ctx.principal)
        except Problem as exc:
            ctx.session.rollback()
            point = get_point(ctx.session, point_id)
            message = exc.detail[:1].upper() + exc.detail[1:]
            if "params.confirm" in exc.detail:
                # The API's refusal, in the words of this form.
                message = (
                    "The two names differ, so nothing was started. Type the new VM's name "
                    "again, exactly, to confirm."
                )
            return _new_vm_page(ctx, point, message, values, status_code=exc.status)
        flash(request, f"Restore as new VM {values['name']} queued.", "info")
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)
