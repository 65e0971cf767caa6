"""The overview: how protected the estate is right now."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.db.types import utcnow
from app.web.context import signed_in
from app.web.errors import WebRoute
from app.web.queries import overview_counts, proxies, recent_jobs, rpo_by_server, rpo_history
from app.web.templating import render

router = APIRouter(route_class=WebRoute)
RECENT_JOBS = 25


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


@router.get("/")
def overview(request: Request) -> Response:
    with signed_in(request) as ctx:
        rpo, servers_total = rpo_by_server(ctx.session)
        return render(
            request,
            "overview.html",
            {
                "section": "overview",
                "counts": overview_counts(ctx.session),
                "jobs": _last_day(ctx.session),
                "last_day": True,
                "proxies": proxies(ctx.session),
                "rpo": rpo,
                "rpo_total": servers_total,
                "rpo_history": rpo_history(ctx.session),
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
            {"jobs": _last_day(ctx.session), "last_day": True},
            user=ctx.user,
        )
