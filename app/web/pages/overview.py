"""The overview: how protected the estate is right now."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from sqlalchemy import func, select
from starlette.responses import Response

from app.db.models import Job
from app.db.types import utcnow
from app.web.context import signed_in
from app.web.errors import WebRoute
from app.web.queries import (
    _aware,
    overview_counts,
    proxies,
    recent_jobs,
    rpo_by_server,
    rpo_chart,
)
from app.web.templating import render

router = APIRouter(route_class=WebRoute)
RECENT_JOBS = 25


def _jobs_last_day_count(session) -> int:
    since = utcnow() - timedelta(hours=24)
    return int(session.scalar(select(func.count(Job.id)).where(Job.created_at >= since)) or 0)


def _last_day(session):
    """The jobs of the last 24 hours, newest first (the table shows the first 25)."""
    return recent_jobs(session, RECENT_JOBS, since=utcnow() - timedelta(hours=24))


def _verified_rpo(session, request):
    """Policies with off-host copies: the RPO counted only on verified restore points."""
    from app.api.deps import runtime
    from app.api.routes.repositories import verified_rpo_by_policy

    every = runtime(request).settings.repository_verify_minutes
    return verified_rpo_by_policy(
        session, utcnow(), with_repository_only=True, verify_minutes=every
    )


RPO_TABLE_ROWS = 100


def _history(session) -> tuple[list, datetime | None]:
    """The RPO chart's days from installation onward (no empty bars for days before any
    policy existed); with none yet, when its first hourly sample is taken."""
    days, began = rpo_chart(session)
    while days and days[0].percent is None:
        days = days[1:]
    if days or began is None:
        return days, None
    start = max(_aware(utcnow()), began)
    return [], start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


@router.get("/")
def overview(request: Request) -> Response:
    with signed_in(request) as ctx:
        every, servers_total = rpo_by_server(ctx.session, limit=1_000_000)
        rpo = every[:RPO_TABLE_ROWS]
        protection = Counter(
            "unprotected"
            if r.status == "unprotected"
            else "pending"
            if r.status == "pending"
            else "protected"
            for r in every
        )
        history, first_sample = _history(ctx.session)
        counts = overview_counts(ctx.session)
        return render(
            request,
            "overview.html",
            {
                "section": "overview",
                "counts": counts,
                "jobs": _last_day(ctx.session),
                "last_day": True,
                "proxies": proxies(ctx.session),
                "rpo": rpo,
                "rpo_total": servers_total,
                "rpo_history": history,
                "rpo_first_sample": first_sample,
                "protection": protection,
                "jobs_last_day": counts["jobs_total"],
                "verified_rpo": _verified_rpo(ctx.session, request),
            },
            user=ctx.user,
        )


@router.get("/partials/recent-jobs")
def recent_jobs_partial(request: Request) -> Response:
    """The overview's job table, polled by htmx every few seconds."""
    with signed_in(request) as ctx:
        return render(
            request,
            "partials/recent_jobs.html",
            {
                "jobs": _last_day(ctx.session),
                "last_day": True,
                "jobs_last_day": _jobs_last_day_count(ctx.session),
            },
            user=ctx.user,
        )
