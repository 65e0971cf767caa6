"""Jobs (with live progress) and the audit log."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import RedirectResponse, Response

from app.api.routes.jobs import SORTABLE as JOB_SORTABLE
from app.api.routes.jobs import cancel_job, get_job
from app.db.models import (
    AuditEvent,
    ExchangeDatabase,
    ExchangeServer,
    Job,
    Policy,
    RestorePoint,
)
from app.db.types import utcnow
from app.domain.jobs import JobKind, JobState
from app.security.roles import Permission
from app.web.context import Form, signed_in
from app.web.errors import WebRoute, is_htmx
from app.web.paging import enum_or_none, page_of
from app.web.queries import child_jobs, names
from app.web.templating import flash, render

router = APIRouter(route_class=WebRoute)

AUDIT_SORTABLE = {"at": AuditEvent.at}


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
        point_id = (job.params or {}).get("restore_point_id")
        children = child_jobs(ctx.session, job) if job.kind == JobKind.BACKUP else []
        made = ctx.session.scalars(
            select(RestorePoint.id).where(RestorePoint.job_id == job.id)
        ).all()
        live = not job.state.finished or any(not c.state.finished for c, _ in children)
        context = {
            "section": "jobs",
            "job": job,
            "policy": policy,
            "server": server,
            "database": database,
            "events": job.events[-200:],
            "children": children,
            "restore_point": ctx.session.get(RestorePoint, point_id)
            if isinstance(point_id, int)
            else None,
            "made_points": made,
            "live": live,
            "throughput": _throughput(job),
        }
        if is_htmx(request):
            # htmx stops polling on 286, so a finished job's page stops asking.
            status = 200 if live else 286
            return render(
                request, "partials/job_live.html", context, user=ctx.user, status_code=status
            )
        return render(request, "catalog/job.html", context, user=ctx.user)


def _throughput(job: Job) -> float | None:
    """Bytes per second since the job began moving data (its copy or restore step)."""
    if not job.bytes_done:
        return None
    began = next((e.at for e in job.events if e.step in ("copy", "restore")), None)
    end = job.finished_at or utcnow()
    seconds = (end - began).total_seconds() if began else 0
    return job.bytes_done / seconds if seconds > 0 else None


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
