"""Repositories: what each holds (stored vs logical bytes), upkeep jobs, and verified RPO."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from app.api.deps import runtime
from app.api.problems import Problem
from app.api.routes.repositories import (
    list_repositories,
    measure_usage,
    start_expire,
    start_verify,
    verified_rpo_by_policy,
)
from app.api.schemas.repositories import VerifyRequest
from app.db.types import utcnow
from app.security.roles import Permission
from app.web.context import Form, signed_in
from app.web.errors import WebRoute
from app.web.forms import text
from app.web.templating import flash, render

router = APIRouter(route_class=WebRoute)
RUN = Permission.RUN_BACKUP
SAMPLES = {"0.1": "10 % of the blocks", "1.0": "every block"}


@router.get("/repositories")
def repository_list(request: Request) -> Response:
    with signed_in(request) as ctx:
        return render(
            request,
            "repositories/list.html",
            {
                "section": "repositories",
                "repositories": list_repositories(ctx.session, ctx.principal),
                "rpo": verified_rpo_by_policy(
                    ctx.session,
                    utcnow(),
                    verify_minutes=runtime(request).settings.repository_verify_minutes,
                ),
                "samples": SAMPLES,
            },
            user=ctx.user,
        )


@router.post("/repositories/{repository_id}/{action}")
def repository_action(request: Request, repository_id: int, action: str, form: Form) -> Response:
    with signed_in(request, RUN, form=form, check_form=True) as ctx:
        try:
            if action == "verify":
                try:
                    sample = float(text(form, "sample") or "1.0")
                except ValueError:
                    sample = 1.0
                body = VerifyRequest(sample=sample if str(sample) in SAMPLES else 1.0)
                job = start_verify(repository_id, body, ctx.session, ctx.principal)
                flash(request, f"Verify job {job.job_id} queued.")
            elif action == "expire":
                job = start_expire(repository_id, ctx.session, ctx.principal)
                flash(request, f"Retention and garbage collection queued as job {job.job_id}.")
            elif action == "measure":
                usage = measure_usage(repository_id, ctx.session, request, ctx.principal)
                flash(request, f"Measured: {usage.images} images in {usage.chunks} chunks.")
            else:
                flash(request, "There is no such action.", "bad")
        except Problem as exc:
            ctx.session.rollback()
            flash(request, exc.detail[:1].upper() + exc.detail[1:], "bad")
        return RedirectResponse("/repositories", status_code=303)
