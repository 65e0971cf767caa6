"""A storage array's page: test it, list its volumes, its snapshots and capabilities, and the
RDM LUNs of the inventory matched to its volumes by NAA id (and the ones no array has)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import RedirectResponse, Response

from app.adapters import arrays
from app.api.problems import Problem
from app.api.routes.arrays import get_array, sync_volumes, test_array
from app.api.routes.jobs import create_job
from app.api.routes.restore_points import get_point
from app.api.schemas.jobs import JobCreate
from app.db.models import ArrayVolume, ExchangeDatabase, ExchangeServer
from app.domain.jobs import JobKind
from app.protection.bindings.arrays import lun_matches, open_driver
from app.protection.restores import array as array_restore
from app.security.roles import Permission
from app.web.context import Form, signed_in
from app.web.errors import WebRoute
from app.web.forms import text
from app.web.templating import flash, render

router = APIRouter(route_class=WebRoute)


@router.get("/arrays/{connection_id}")
def array_detail(request: Request, connection_id: int) -> Response:
    with signed_in(request) as ctx:
        conn = get_array(ctx.session, connection_id)
        volumes = ctx.session.scalars(
            select(ArrayVolume)
            .where(ArrayVolume.connection_id == conn.id)
            .order_by(ArrayVolume.consistency_group, ArrayVolume.naa_id)
        ).all()
        matches = lun_matches(ctx.session)
        by_naa = {m.naa_id: m for m in matches if m.array_connection_id == conn.id}
        unmatched = [m for m in matches if not m.matched]
        capabilities, snapshots, problem = None, [], None
        try:
            driver = open_driver(conn)
            capabilities = driver.capabilities()
            snapshots = list(reversed(driver.list_snapshots()))
        except arrays.ArrayError as exc:
            problem = str(exc)
        return render(
            request,
            "arrays/detail.html",
            {
                "section": "connections",
                "conn": conn,
                "volumes": volumes,
                "by_naa": by_naa,
                "matched": [m for m in matches if m.array_connection_id == conn.id],
                "unmatched": unmatched,
                "capabilities": capabilities,
                "snapshots": snapshots,
                "problem": problem,
            },
            user=ctx.user,
        )


@router.post("/arrays/{connection_id}/test")
def array_test(request: Request, connection_id: int, form: Form) -> Response:
    with signed_in(request, Permission.MANAGE_CONNECTIONS, form=form, check_form=True) as ctx:
        conn = get_array(ctx.session, connection_id)
        result = test_array(ctx.session, conn, ctx.principal.actor)
        flash(
            request,
            ("Array reached: " if result.ok else "Test failed: ") + result.message,
            "ok" if result.ok else "bad",
        )
        return RedirectResponse(f"/arrays/{conn.id}", status_code=303)


@router.post("/arrays/{connection_id}/sync")
def array_sync(request: Request, connection_id: int, form: Form) -> Response:
    with signed_in(request, Permission.RUN_BACKUP, form=form, check_form=True) as ctx:
        conn = get_array(ctx.session, connection_id)
        try:
            rows = sync_volumes(ctx.session, conn, ctx.principal.actor)
        except Problem as exc:
            flash(request, exc.detail, "bad")
            return RedirectResponse(f"/arrays/{connection_id}", status_code=303)
        flash(request, f"The array reported {len(rows)} volume(s).")
        return RedirectResponse(f"/arrays/{conn.id}", status_code=303)


# -- restores of array-snapshot restore points ------------------------------------------

RESTORE_CHOICES = {
    "revert": "Instant recovery: revert the database and log LUNs to the array snapshot",
    "clone": "Clone the snapshot to new volumes, for inspection or a recovery database",
    "volume": "Full restore from the repository onto new volumes",
}


def _restore_page(
    ctx,
    point,
    error: str | None = None,
    typed: str = "",
    mode: str = "revert",
    status_code: int = 200,
) -> Response:
    server = ctx.session.get(ExchangeServer, point.server_id) if point.server_id else None
    database = ctx.session.get(ExchangeDatabase, point.database_id) if point.database_id else None
    live = {c.location.value for c in point.live_copies()}
    possible = {
        "revert": "array_snapshot" in live,
        "clone": "array_snapshot" in live,
        "volume": "repository" in live,
    }
    return render(
        ctx.request,
        "arrays/restore.html",
        {
            "section": "restore_points",
            "point": point,
            "server": server,
            "database": database,
            "choices": RESTORE_CHOICES,
            "possible": possible,
            "volumes": (point.details or {}).get("volumes", {}),
            "error": error,
            "typed": typed,
            "mode": mode,
        },
        user=ctx.user,
        status_code=status_code,
    )


@router.get("/restore-points/{point_id}/array-restore")
def array_restore_confirm(request: Request, point_id: int) -> Response:
    with signed_in(request, Permission.RUN_RESTORE) as ctx:
        point = get_point(ctx.session, point_id)
        if not array_restore.is_array_point(point):
            return RedirectResponse(f"/restore-points/{point.id}", status_code=303)
        return _restore_page(ctx, point)


@router.post("/restore-points/{point_id}/array-restore")
def array_restore_start(request: Request, point_id: int, form: Form) -> Response:
    """Start the restore job; the API checks what the point allows and the typed name."""
    with signed_in(request, Permission.RUN_RESTORE, form=form, check_form=True) as ctx:
        point = get_point(ctx.session, point_id)
        mode = text(form, "mode") or "revert"
        typed = text(form, "confirm")[:128]
        params: dict[str, str] = {"mode": mode}
        if array_restore.destroys_data(params):
            params["confirm"] = typed
        try:
            job = create_job(
                JobCreate(kind=JobKind.RESTORE, restore_point_id=point.id, params=params),
                ctx.session,
                ctx.principal,
            )
        except Problem as exc:
            ctx.session.rollback()
            point = get_point(ctx.session, point_id)
            message = exc.detail[:1].upper() + exc.detail[1:]
            if "params.confirm" in exc.detail:
                message = (
                    f"“{typed}” is not the server's name, so nothing was started."
                    if typed
                    else "Nothing was started: type the server's name to confirm."
                )
            return _restore_page(ctx, point, message, typed, mode, status_code=exc.status)
        flash(request, f"{RESTORE_CHOICES.get(mode, mode).split(':')[0]} queued.", "info")
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)
