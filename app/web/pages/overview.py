"""The overview: how protected the estate is right now."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.web.context import signed_in
from app.web.errors import WebRoute
from app.web.queries import overview_counts, proxies, recent_jobs
from app.web.templating import render

router = APIRouter(route_class=WebRoute)


@router.get("/")
def overview(request: Request) -> Response:
    with signed_in(request) as ctx:
        return render(
            request,
            "overview.html",
            {
                "section": "overview",
                "counts": overview_counts(ctx.session),
                "jobs": recent_jobs(ctx.session),
                "proxies": proxies(ctx.session),
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
            {"jobs": recent_jobs(ctx.session)},
            user=ctx.user,
        )
