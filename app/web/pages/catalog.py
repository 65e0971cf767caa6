"""Jobs (with live progress) and the audit log."""

from __future__ import annotations

import csv
import io
import json
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import RedirectResponse, Response, StreamingResponse

from app.api.deps import runtime
from app.api.routes.jobs import SORTABLE as JOB_SORTABLE
from app.api.routes.jobs import cancel_job, get_job
from app.audit import record
from app.db.models import (
    AuditEvent,
    ExchangeDatabase,
    ExchangeServer,
    Job,
    Policy,
    RestorePoint,
)
from app.db.types import utcnow
from app.domain.jobs import JobKind, JobState, run_state
from app.security.roles import Permission
from app.web.context import Form, signed_in
from app.web.errors import WebRoute, is_htmx
from app.web.paging import enum_or_none, page_of
from app.web.queries import audit_object_names, child_jobs, names
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
        run = _run_summary(job, [c for c, _ in children]) if children else None
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
            "run": run,
            "throughput": _throughput(job),
        }
        if is_htmx(request):
            # htmx stops polling on 286, so a finished job's page stops asking; the last
            # answer also clears the "queued" notice the page opened with.
            status = 200 if live else 286
            context["clear_flashes"] = not live
            return render(
                request, "partials/job_live.html", context, user=ctx.user, status_code=status
            )
        return render(request, "catalog/job.html", context, user=ctx.user)


def _run_summary(job: Job, children: list[Job]) -> dict:
    """A policy run as one thing to watch: its state from all its jobs, progress and bytes
    added up over its per-server jobs (a finished one counts as done)."""
    done = [100.0 if c.state.finished else c.progress_percent for c in children]
    return {
        "state": run_state(job.state, [c.state for c in children]),
        "progress": sum(done) / len(done),
        "bytes_done": sum(c.bytes_done for c in children),
        "bytes_total": sum(c.bytes_total or 0 for c in children) or None,
        "finished": sum(1 for c in children if c.state.finished),
        "total": len(children),
    }


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


def _audit_query(actor: str | None, action: str | None, outcome: str | None):
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
    return query


def _audit_filters(actor, action, outcome) -> tuple[str | None, str | None, str | None]:
    return (
        (actor or "").strip()[:64] or None,
        (action or "").strip()[:64] or None,
        (outcome or "").strip()[:16] or None,
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
        actor, action, outcome = _audit_filters(actor, action, outcome)
        filters = {"actor": actor, "action": action, "outcome": outcome}
        items, pager = page_of(
            ctx.session,
            _audit_query(actor, action, outcome),
            page=page,
            sortable=AUDIT_SORTABLE,
            default_sort="-at",
            params=filters,
            size=50,
        )
        return render(
            request,
            "catalog/audit.html",
            {
                "section": "audit",
                "items": items,
                "object_names": audit_object_names(ctx.session, items),
                "pager": pager,
                "actor": actor or "",
                "action": action or "",
                "outcome": outcome or "",
                "export_query": urlencode({k: v for k, v in filters.items() if v}),
            },
            user=ctx.user,
        )


CSV_BATCH = 1000


@router.get("/audit/export.csv")
def audit_export(
    request: Request,
    actor: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
) -> Response:
    """The filtered log as CSV, newest first, streamed in batches (the log only grows)."""
    with signed_in(request, Permission.READ_AUDIT) as ctx:
        actor, action, outcome = _audit_filters(actor, action, outcome)
        query = _audit_query(actor, action, outcome).order_by(AuditEvent.id.desc())
        record(
            ctx.session,
            ctx.principal.actor,
            "audit.export",
            "audit",
            None,
            filter_actor=actor,
            filter_action=action,
            filter_outcome=outcome,
        )
    db = runtime(request).db

    def rows():
        out = io.StringIO()
        writer = csv.writer(out)
        header = ["at", "actor", "actor_kind", "client_ip", "action", "object_type"]
        writer.writerow([*header, "object_id", "object_name", "outcome", "detail"])
        last_id = None
        while True:
            with db.session() as session:
                batch = query if last_id is None else query.where(AuditEvent.id < last_id)
                events = session.scalars(batch.limit(CSV_BATCH)).all()
                labels = audit_object_names(session, events)
            for e in events:
                writer.writerow(
                    [
                        e.at.isoformat(),
                        e.actor,
                        e.actor_kind,
                        e.client_ip or "",
                        e.action,
                        e.object_type,
                        e.object_id or "",
                        labels.get((e.object_type, e.object_id or ""), ""),
                        e.outcome,
                        json.dumps(e.detail or {}, sort_keys=True, default=str),
                    ]
                )
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            if len(events) < CSV_BATCH:
                return
            last_id = events[-1].id

    stamp = utcnow().strftime("%Y%m%d-%H%M")
    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="bulwark-audit-{stamp}.csv"'},
    )
