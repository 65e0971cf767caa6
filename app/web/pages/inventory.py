"""The vSphere inventory as last synced: VMs, their disks and backings; protect a VM.

Everything here reads the database (the copy the sync stored), never vCenter. Lists are cut
into pages in SQL and a page's disks, datastores and Exchange servers are read in one query
each, so 5,000 VMs cost the same as 50.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from starlette.responses import RedirectResponse, Response

from app.api.problems import Problem
from app.api.routes.servers import create_server
from app.api.schemas.servers import ServerCreate
from app.db.models import Connection, Datastore, ExchangeServer, VirtualDisk, VirtualMachine
from app.domain.connections import ConnectionKind
from app.security.roles import Permission
from app.web import labels
from app.web.context import Ctx, Form, signed_in
from app.web.errors import WebRoute
from app.web.forms import FormState, apply_problem, apply_validation_error, text, values_of
from app.web.paging import int_or_none, page_of
from app.web.templating import flash, render

router = APIRouter(route_class=WebRoute)
PAGE_SIZE = 50
SORTABLE = {"name": VirtualMachine.name}
BACKINGS = tuple(labels.BACKINGS)


def _is_exchange():
    return (
        select(ExchangeServer.id)
        .where(
            ExchangeServer.connection_id == VirtualMachine.connection_id,
            ExchangeServer.vm_moref == VirtualMachine.moref,
        )
        .exists()
    )


def servers_of(session, vms: Iterable[VirtualMachine]) -> dict[tuple[int, str], ExchangeServer]:
    """The Exchange servers among these VMs, by (connection id, moref), in one query."""
    vms = list(vms)
    if not vms:
        return {}
    rows = session.scalars(
        select(ExchangeServer).where(
            ExchangeServer.vm_moref.in_({vm.moref for vm in vms}),
            ExchangeServer.connection_id.in_({vm.connection_id for vm in vms}),
        )
    ).all()
    return {(s.connection_id, s.vm_moref): s for s in rows}


def datastores_of(session, vms: Iterable[VirtualMachine]) -> dict[tuple[int, str], str]:
    """Datastore names for the disks of these VMs, by (connection id, moref), in one query."""
    wanted = {(vm.connection_id, d.datastore_moref) for vm in vms for d in vm.disks}
    morefs = {m for _, m in wanted if m}
    if not morefs:
        return {}
    rows = session.execute(
        select(Datastore.connection_id, Datastore.moref, Datastore.name).where(
            Datastore.moref.in_(morefs),
            Datastore.connection_id.in_({c for c, _ in wanted}),
        )
    ).all()
    return {(c, m): n for c, m, n in rows}


def _vcenters(ctx: Ctx) -> list[tuple[int, str]]:
    return list(
        ctx.session.execute(
            select(Connection.id, Connection.name)
            .where(Connection.kind == ConnectionKind.VCENTER)
            .order_by(Connection.name)
        ).all()
    )


@router.get("/inventory")
def vm_list(
    request: Request,
    connection: str | None = None,
    q: str | None = None,
    power: str | None = None,
    backing: str | None = None,
    exchange: str | None = None,
    page: int = 1,
) -> Response:
    with signed_in(request) as ctx:
        connection_id = int_or_none(connection)
        q = (q or "").strip()[:64]
        power = power if power in labels.POWER_STATES else None
        backing = backing if backing in BACKINGS else None
        exchange = exchange if exchange in ("yes", "no") else None

        query = select(VirtualMachine).options(selectinload(VirtualMachine.disks))
        if connection_id is not None:
            query = query.where(VirtualMachine.connection_id == connection_id)
        if q:
            query = query.where(VirtualMachine.name.icontains(q, autoescape=True))
        if power:
            query = query.where(VirtualMachine.power_state == power)
        if backing:
            query = query.where(VirtualMachine.disks.any(VirtualDisk.backing == backing))
        if exchange:
            query = query.where(_is_exchange() if exchange == "yes" else ~_is_exchange())
        items, pager = page_of(
            ctx.session,
            query,
            page=page,
            sortable=SORTABLE,
            default_sort="name",
            params={
                "connection": connection_id,
                "q": q,
                "power": power,
                "backing": backing,
                "exchange": exchange,
            },
            size=PAGE_SIZE,
        )
        vcenters = _vcenters(ctx)
        synced = dict(
            ctx.session.execute(
                select(VirtualMachine.connection_id, func.max(VirtualMachine.synced_at)).group_by(
                    VirtualMachine.connection_id
                )
            ).all()
        )
        return render(
            request,
            "inventory/list.html",
            {
                "section": "inventory",
                "items": items,
                "pager": pager,
                "filters": {
                    "connection": connection_id,
                    "q": q,
                    "power": power,
                    "backing": backing,
                    "exchange": exchange,
                },
                "filtered": any((connection_id, q, power, backing, exchange)),
                "vcenters": vcenters,
                "vcenter_names": dict(vcenters),
                "synced": synced,
                "servers": servers_of(ctx.session, items),
                "datastores": datastores_of(ctx.session, items),
                "power_states": labels.POWER_STATES,
                "backings": labels.BACKINGS,
            },
            user=ctx.user,
        )


def get_vm(ctx: Ctx, vm_id: int) -> VirtualMachine:
    vm = ctx.session.scalar(
        select(VirtualMachine)
        .where(VirtualMachine.id == vm_id)
        .options(selectinload(VirtualMachine.disks))
    )
    if vm is None:
        raise Problem(404, f"virtual machine {vm_id} is not in the inventory")
    return vm


def _vm_page(ctx: Ctx, vm: VirtualMachine, state: FormState, status_code: int = 200) -> Response:
    server = servers_of(ctx.session, [vm]).get((vm.connection_id, vm.moref))
    return render(
        ctx.request,
        "inventory/vm.html",
        {
            "section": "inventory",
            "vm": vm,
            "vcenter": ctx.session.get(Connection, vm.connection_id),
            "server": server,
            "datastores": datastores_of(ctx.session, [vm]),
            "form": state,
        },
        user=ctx.user,
        status_code=status_code,
    )


@router.get("/inventory/vms/{vm_id}")
def vm_detail(request: Request, vm_id: int) -> Response:
    with signed_in(request) as ctx:
        vm = get_vm(ctx, vm_id)
        return _vm_page(ctx, vm, FormState(values={"name": vm.name, "description": ""}))


@router.post("/inventory/vms/{vm_id}/protect")
def vm_protect(request: Request, vm_id: int, form: Form) -> Response:
    """Protect as Exchange server: the API's create, linked to this VM by moref."""
    with signed_in(request, Permission.MANAGE_PROTECTION, form=form, check_form=True) as ctx:
        vm = get_vm(ctx, vm_id)
        state = FormState(values=values_of(form))
        data: dict[str, Any] = {
            "name": text(form, "name") or vm.name,
            "connection_id": vm.connection_id,
            "vm_moref": vm.moref,
            "description": text(form, "description"),
        }
        state.values.setdefault("name", data["name"])
        try:
            body = ServerCreate.model_validate(data)
        except ValidationError as exc:
            apply_validation_error(state, exc, model_field="name")
            return _vm_page(ctx, vm, state, status_code=422)
        try:
            server = create_server(body, ctx.session, ctx.principal)
        except Problem as exc:
            ctx.session.rollback()
            if exc.status == 409:  # the name is taken
                state.add("name", exc.detail[:1].upper() + exc.detail[1:])
            else:
                apply_problem(state, exc)
            return _vm_page(ctx, get_vm(ctx, vm_id), state, status_code=exc.status)
        flash(
            request,
            f"{server.name} is now an Exchange server. Map its databases to their disks below.",
        )
        return RedirectResponse(f"/servers/{server.id}#databases", status_code=303)
