"""Disks of a VM image restore point: restore one to a datastore (new disk or over the
original, with the server's name typed to confirm). Downloads go to the API's streamed,
resumable endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from app.api.routes.restore_points import get_point
from app.db.models import ExchangeServer, RestorePoint
from app.protection.restores.disk import RestoreRefused, find_disk_image, queue_disk_restore
from app.security.roles import Permission
from app.web.context import Ctx, Form, signed_in
from app.web.errors import WebRoute
from app.web.forms import optional, text
from app.web.templating import flash, render

router = APIRouter(route_class=WebRoute)


def _page(
    ctx: Ctx,
    point: RestorePoint,
    key: int,
    *,
    error: str | None = None,
    form: dict | None = None,
    status_code: int = 200,
) -> Response:
    server = ctx.session.get(ExchangeServer, point.server_id) if point.server_id else None
    try:
        image = find_disk_image(ctx.session, point, key)
    except RestoreRefused as exc:
        image, error = None, error or str(exc)
        status_code = status_code if status_code != 200 else 409
    return render(
        ctx.request,
        "restore_points/restore_disk.html",
        {
            "section": "restore_points",
            "point": point,
            "server": server,
            "image": image,
            "key": key,
            "error": error,
            "form": form or {"target": "new"},
        },
        user=ctx.user,
        status_code=status_code,
    )


@router.get("/restore-points/{point_id}/disks/{key}/restore")
def restore_disk_form(request: Request, point_id: int, key: int) -> Response:
    with signed_in(request, Permission.RUN_RESTORE) as ctx:
        return _page(ctx, get_point(ctx.session, point_id), key)


@router.post("/restore-points/{point_id}/disks/{key}/restore")
def restore_disk(request: Request, point_id: int, key: int, form: Form) -> Response:
    with signed_in(request, Permission.RUN_RESTORE, form=form, check_form=True) as ctx:
        point = get_point(ctx.session, point_id)
        target = text(form, "target") or "new"
        typed = (optional(form, "confirm") or "")[:128]
        datastore = (optional(form, "datastore") or "")[:128] or None
        values = {"target": target, "confirm": typed, "datastore": datastore or ""}
        try:
            job = queue_disk_restore(
                ctx.session,
                point,
                key,
                target=target,
                confirm=typed if target == "original" else None,
                datastore=datastore if target == "new" else None,
                actor=ctx.principal.actor,
            )
        except RestoreRefused as exc:
            message = str(exc)
            return _page(
                ctx,
                point,
                key,
                error=message[:1].upper() + message[1:],
                form=values,
                status_code=422,
            )
        flash(request, f"Restore of disk {key} from restore point {point.id} queued.", "info")
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)
