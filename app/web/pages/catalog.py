"""Read-only pages: Exchange servers, jobs, restore points and the audit log."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from starlette.responses import RedirectResponse, Response

from app.api.routes.jobs import SORTABLE as JOB_SORTABLE
from app.api.routes.jobs import cancel_job, get_job
from app.api.routes.restore_points import SORTABLE as POINT_SORTABLE
from app.api.routes.servers import SORTABLE as SERVER_SORTABLE
from app.api.routes.servers import get_server, server_advice
from app.db.models import (
    AuditEvent,
    Connection,
    ExchangeDatabase,
    ExchangeServer,
    Job,
    Policy,
    PolicyTarget,
    RestorePoint,
)
from app.domain.jobs import JobKind, JobState
from app.domain.protection import Verification
from app.protection.holds import holds_by_point
from app.security.roles import Permission
from app.web.context import Form, signed_in
from app.web.errors import WebRoute, is_htmx
from app.web.paging import enum_or_none, page_of
from app.web.queries import names
from app.web.templating import flash, render

router = APIRouter(route_class=WebRoute)

AUDIT_SORTABLE = {"at": AuditEvent.at}


@router.get("/servers")
def server_list(request: Request, page: int = 1) -> Response:
    with signed_in(request) as ctx:
        items, pager = page_of(
            ctx.session,
            select(ExchangeServer).options(selectinload(ExchangeServer.databases)),
            page=page,
            sortable=SERVER_SORTABLE,
            default_sort="name",
            params={},
        )
        ids = [s.id for s in items]
        covered = dict(
            ctx.session.execute(
                select(PolicyTarget.server_id, func.count(func.distinct(PolicyTarget.policy_id)))
                .where(PolicyTarget.server_id.in_(ids))
                .group_by(PolicyTarget.server_id)
            ).all()
        )
        return render(
            request,
            "catalog/servers.html",
            {
                "section": "servers",
                "items": items,
                "pager": pager,
                "vcenters": names(ctx.session, Connection, (s.connection_id for s in items)),
                "covered": covered,
            },
            user=ctx.user,
        )


@router.get("/servers/{server_id}")
def server_detail(request: Request, server_id: int) -> Response:
    with signed_in(request) as ctx:
        server = get_server(ctx.session, server_id)
        # The API's advisor: which methods fit each database's layout, and why the others not.
        advice = server_advice(server.id, ctx.session, ctx.principal)
        policies = ctx.session.scalars(
            select(Policy)
            .where(Policy.targets.any(PolicyTarget.server_id == server.id))
            .order_by(Policy.name)
        ).all()
        points = ctx.session.scalars(
            select(RestorePoint)
            .where(RestorePoint.server_id == server.id)
            .order_by(RestorePoint.captured_at.desc(), RestorePoint.id.desc())
            .limit(10)
        ).all()
        return render(
            request,
            "catalog/server.html",
            {
                "section": "servers",
                "server": server,
                "vcenter": ctx.session.get(Connection, server.connection_id)
                if server.connection_id
                else None,
                "advice": advice,
                "policies": policies,
                "points": points,
                "databases": {d.id: d.name for d in server.databases},
            },
            user=ctx.user,
        )


def _job_rows(session, items: list[Job]):
    policies = names(session, Policy, (j.policy_id for j in items))
    servers = names(session, ExchangeServer, (j.server_id for j in items))
    return [(j, policies.get(j.policy_id), servers.get(j.server_id)) for j in items]


@router.get("/jobs")
def job_list(
    request: Request, state: str | None = None, kind: str | None = None, page: int = 1
) -> Response:
    with signed_in(request) as ctx:
        chosen_state = enum_or_none(JobState, state)
        chosen_kind = enum_or_none(JobKind, kind)
        query = select(Job)
        if chosen_state is not None:
            query = query.where(Job.state == chosen_state)
        if chosen_kind is not None:
            query = query.where(Job.kind == chosen_kind)
        items, pager = page_of(
            ctx.session,
            query,
            page=page,
            sortable=JOB_SORTABLE,
            default_sort="-created_at",
            params={
                "state": chosen_state and chosen_state.value,
                "kind": chosen_kind and chosen_kind.value,
            },
        )
        context = {
            "section": "jobs",
            "rows": _job_rows(ctx.session, items),
            "pager": pager,
            "state": chosen_state,
            "kind": chosen_kind,
            "states": list(JobState),
            "kinds": list(JobKind),
            "self_url": request.url.path + ("?" + request.url.query if request.url.query else ""),
        }
        template = "partials/job_table.html" if is_htmx(request) else "catalog/jobs.html"
        return render(request, template, context, user=ctx.user)


@router.get("/jobs/{job_id}")
def job_detail(request: Request, job_id: int) -> Response:
    with signed_in(request) as ctx:
        job = get_job(ctx.session, job_id)
        policy = ctx.session.get(Policy, job.policy_id) if job.policy_id else None
        server = ctx.session.get(ExchangeServer, job.server_id) if job.server_id else None
        database = ctx.session.get(ExchangeDatabase, job.database_id) if job.database_id else None
        context = {
            "section": "jobs",
            "job": job,
            "policy": policy,
            "server": server,
            "database": database,
            "events": job.events[-200:],
        }
        if is_htmx(request):
            # htmx stops polling on 286, so a finished job's page stops asking.
            status = 286 if job.state.finished else 200
            return render(
                request, "partials/job_live.html", context, user=ctx.user, status_code=status
            )
        return render(request, "catalog/job.html", context, user=ctx.user)


@router.post("/jobs/{job_id}/cancel")
def job_cancel(request: Request, job_id: int, form: Form) -> Response:
    with signed_in(request, Permission.RUN_BACKUP, form=form, check_form=True) as ctx:
        job = cancel_job(job_id, ctx.session, ctx.principal)
        flash(
            request,
            "Job cancelled."
            if job.state == JobState.CANCELLED
            else "Cancellation requested: the worker stops at its next step and cleans up.",
            "info",
        )
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.get("/restore-points")
def restore_point_list(
    request: Request, verification: str | None = None, page: int = 1
) -> Response:
    with signed_in(request) as ctx:
        chosen = enum_or_none(Verification, verification)
        query = select(RestorePoint)
        if chosen is not None:
            query = query.where(RestorePoint.verification == chosen)
        items, pager = page_of(
            ctx.session,
            query,
            page=page,
            sortable=POINT_SORTABLE,
            default_sort="-captured_at",
            params={"verification": chosen and chosen.value},
        )
        return render(
            request,
            "catalog/restore_points.html",
            {
                "section": "restore_points",
                "items": items,
                "pager": pager,
                "verification": chosen,
                "verifications": list(Verification),
                "holds": holds_by_point(ctx.session, items) if items else {},
                "servers": names(ctx.session, ExchangeServer, (p.server_id for p in items)),
                "databases": names(ctx.session, ExchangeDatabase, (p.database_id for p in items)),
                "policies": names(ctx.session, Policy, (p.policy_id for p in items)),
            },
            user=ctx.user,
        )


@router.get("/audit")
def audit_log(
    request: Request,
    actor: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    page: int = 1,
) -> Response:
    with signed_in(request, Permission.READ_AUDIT) as ctx:
        actor = (actor or "").strip()[:64] or None
        action = (action or "").strip()[:64] or None
        outcome = (outcome or "").strip()[:16] or None
        query = select(AuditEvent)
        if actor:
            query = query.where(AuditEvent.actor == actor)
        if action:
            # Like the API: exact, or a prefix such as 'connection.' (a trailing dot).
            query = query.where(
                AuditEvent.action.startswith(action, autoescape=True)
                if action.endswith(".")
                else AuditEvent.action == action
            )
        if outcome:
            query = query.where(AuditEvent.outcome == outcome)
        items, pager = page_of(
            ctx.session,
            query,
            page=page,
            sortable=AUDIT_SORTABLE,
            default_sort="-at",
            params={"actor": actor, "action": action, "outcome": outcome},
            size=50,
        )
        return render(
            request,
            "catalog/audit.html",
            {
                "section": "audit",
                "items": items,
                "pager": pager,
                "actor": actor or "",
                "action": action or "",
                "outcome": outcome or "",
            },
            user=ctx.user,
        )
