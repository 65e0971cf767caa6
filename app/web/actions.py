"""Actions several pages offer: starting a job."""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from app.api.routes.jobs import create_job
from app.api.schemas.jobs import JobCreate
from app.web.context import Ctx
from app.web.templating import flash


def start_job(ctx: Ctx, body: JobCreate, message: str) -> Response:
    """Start a job through the API's function (its checks, its audit record) and show it."""
    job = create_job(body, ctx.session, ctx.principal)
    flash(ctx.request, message, "info")
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)
