"""The whole-VM restore wizard: restore a VM-image restore point as a new VM (name, folder,
host or cluster, datastore, network; defaults from the original, network disconnected), or
over the original (configuration differences shown, the server's name typed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from app.adapters import vsphere
from app.adapters.vsphere import vm_config
from app.api.deps import runtime
from app.api.routes.restore_points import get_point
from app.db.models import Connection, ExchangeServer, RestorePoint
from app.domain.protection import RestoreRefused
from app.inventory import vcenter
from app.protection.restores import whole_vm as restore_whole_vm
from app.security.roles import Permission
from app.web.context import Ctx, Form, signed_in
from app.web.errors import WebRoute
from app.web.forms import checkbox, text
from app.web.pages.restore_points import _point_context
from app.web.templating import flash, render

router = APIRouter(route_class=WebRoute)
FIELDS = ("new_vm_name", "folder", "placement", "datastore", "network")


def _vcenter_view(ctx: Ctx, server: ExchangeServer | None, point: RestorePoint, target: str):
    """Inventory choices and, for a restore over the original, the differences (live)."""
    conn = ctx.session.get(Connection, server.connection_id) if server else None
    if conn is None:
        return None, None, "The server is no longer linked to a vCenter."
    config = (point.details or {}).get("vm_config") or {}
    try:
        with vcenter.open_client(conn, runtime(ctx.request).secrets) as client:
            choices = vm_config.inventory_choices(client)
            differences = None
            if target == "original" and server.vm_moref and config:
                differences = restore_whole_vm.current_differences(client, config, server.vm_moref)
    except vsphere.VSphereError as exc:
        return None, None, f"vCenter '{conn.name}' could not be read: {exc}"
    return choices, differences, None


def _defaults(point: RestorePoint, server: ExchangeServer | None) -> dict[str, Any]:
    config = (point.details or {}).get("vm_config") or {}
    path = config.get("vm_path") or ""
    return {
        "new_vm_name": f"{server.name}-restored" if server else "",
        "folder": config.get("folder") or "",
        "placement": config.get("host") or "",
        "datastore": path.split("]", 1)[0].lstrip("[") if path else "",
        "network": next((n.get("network") for n in config.get("nics") or []), "") or "",
        "connect_network": False,
        "power_on": False,
        "confirm": "",
    }


def _page(
    ctx: Ctx,
    point: RestorePoint,
    target: str,
    values: dict[str, Any] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    server = ctx.session.get(ExchangeServer, point.server_id) if point.server_id else None
    offer = next(o for o in restore_whole_vm.offers(point) if o.key == f"whole_vm_{target}")
    choices, differences, problem = (None, None, None)
    if offer.available:
        choices, differences, problem = _vcenter_view(ctx, server, point, target)
    context = _point_context(ctx, point)
    context.update(
        {
            "target": target,
            "offer": offer,
            "config": (point.details or {}).get("vm_config") or {},
            "choices": choices,
            "differences": differences,
            "vcenter_problem": problem,
            "values": values or _defaults(point, server),
            "error": error,
        }
    )
    return render(
        ctx.request, "restore_points/whole_vm.html", context, user=ctx.user, status_code=status_code
    )


@router.get("/restore-points/{point_id}/whole-vm")
def whole_vm_form(request: Request, point_id: int, target: str = "new") -> Response:
    with signed_in(request, Permission.RUN_RESTORE) as ctx:
        target = target if target in restore_whole_vm.TARGETS else "new"
        return _page(ctx, get_point(ctx.session, point_id), target)


@router.post("/restore-points/{point_id}/whole-vm")
def whole_vm(request: Request, point_id: int, form: Form) -> Response:
    """Queue the restore through the same checks as the API (audited there)."""
    with signed_in(request, Permission.RUN_RESTORE, form=form, check_form=True) as ctx:
        point = get_point(ctx.session, point_id)
        target = text(form, "target")
        target = target if target in restore_whole_vm.TARGETS else "new"
        values: dict[str, Any] = {k: text(form, k)[:200] for k in FIELDS}
        values.update(
            connect_network=checkbox(form, "connect_network"),
            power_on=checkbox(form, "power_on"),
            confirm=text(form, "confirm")[:128],
        )
        params: dict[str, Any] = {
            "target": target,
            "power_on": values["power_on"],
            "connect_network": values["connect_network"],
        }
        for key in ("new_vm_name", "folder", "datastore", "network"):
            if values[key]:
                params[key] = values[key]
        placement = values["placement"]
        if placement:
            params["cluster" if placement.startswith("cluster") else "host"] = placement
        if target == "original":
            params = {"target": "original", "confirm": values["confirm"]}
        try:
            job = restore_whole_vm.queue(ctx.session, point, params, ctx.principal.actor)
        except RestoreRefused as exc:
            ctx.session.rollback()
            point = get_point(ctx.session, point_id)
            message = str(exc)
            server = ctx.session.get(ExchangeServer, point.server_id) if point.server_id else None
            if target == "original" and "params.confirm" in message and server is not None:
                message = (
                    f"“{values['confirm']}” is not the server's name, so nothing was started. "
                    if values["confirm"]
                    else "Nothing was started. "
                ) + f"Type {server.name} exactly to restore over it."
            return _page(ctx, point, target, values, message[:1].upper() + message[1:], 422)
        what = (
            f"Restore of every disk over {job.params.get('confirm')}"
            if target == "original"
            else f"Restore as new VM {values['new_vm_name']}"
        )
        flash(request, f"{what} queued.", "info")
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)
