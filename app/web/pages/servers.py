"""Exchange servers: the list, and a server's page — its VM's disks, where each database and
its logs live (mapped through the API's functions), the advisor, and its restore points."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from app.api.problems import Problem
from app.api.routes.agent import agent_status, new_enrollment
from app.api.routes.servers import SORTABLE as SERVER_SORTABLE
from app.api.routes.servers import (
    add_database,
    delete_database,
    get_server,
    server_advice,
    update_database,
)
from app.api.schemas.servers import DatabaseIn, DatabaseUpdate
from app.db.models import (
    Connection,
    ExchangeDatabase,
    ExchangeServer,
    Policy,
    PolicyTarget,
    RestorePoint,
    VirtualMachine,
)
from app.domain.protection import DatabaseLayout, layout_for_backing
from app.inventory.queries import server_vm
from app.protection.catalog.holds import holds_by_point
from app.security.roles import Permission
from app.web.context import Ctx, Form, signed_in
from app.web.errors import WebRoute
from app.web.forms import FormState, apply_problem, apply_validation_error, text, values_of
from app.web.labels import label
from app.web.pages.inventory import datastores_of
from app.web.paging import page_of
from app.web.queries import names, revertible, server_summaries
from app.web.templating import flash, render

router = APIRouter(route_class=WebRoute)
MANAGE = Permission.MANAGE_PROTECTION
NEW = "new"


@router.get("/servers")
def server_list(request: Request, page: int = 1) -> Response:
    with signed_in(request) as ctx:
        items, pager = page_of(
            ctx.session,
            select(ExchangeServer).options(selectinload(ExchangeServer.databases)),
            page=page,
            sortable=SERVER_SORTABLE,
            default_sort="name",
            params={},
        )
        ids = [s.id for s in items]
        covered = dict(
            ctx.session.execute(
                select(PolicyTarget.server_id, func.count(func.distinct(PolicyTarget.policy_id)))
                .where(PolicyTarget.server_id.in_(ids))
                .group_by(PolicyTarget.server_id)
            ).all()
        )
        # Names beside morefs: the VMs as the last inventory sync stored them, one query.
        wanted = {(s.connection_id, s.vm_moref) for s in items if s.vm_moref}
        vm_names = {
            (conn, moref): name
            for conn, moref, name in ctx.session.execute(
                select(VirtualMachine.connection_id, VirtualMachine.moref, VirtualMachine.name)
                .where(VirtualMachine.moref.in_({m for _, m in wanted}))
                .where(VirtualMachine.connection_id.in_({c for c, _ in wanted}))
            )
            if (conn, moref) in wanted
        }
        return render(
            request,
            "servers/list.html",
            {
                "section": "servers",
                "items": items,
                "pager": pager,
                "vcenters": names(ctx.session, Connection, (s.connection_id for s in items)),
                "vm_names": vm_names,
                "covered": covered,
                "summaries": server_summaries(ctx.session, ids),
            },
            user=ctx.user,
        )


def vm_of(ctx: Ctx, server: ExchangeServer) -> VirtualMachine | None:
    """The server's VM as the last inventory sync stored it, with its disks."""
    return server_vm(ctx.session, server)


def _key(value: int | None) -> str:
    return "" if value is None else str(value)


def _database_values(db: ExchangeDatabase) -> dict[str, Any]:
    return {
        "name": db.name,
        "database_disk_key": _key(db.database_disk_key),
        "log_disk_key": _key(db.log_disk_key),
        "layout": db.layout.value,
    }


def _server_page(
    ctx: Ctx,
    server: ExchangeServer,
    forms: dict[Any, FormState] | None = None,
    status_code: int = 200,
    enrollment: Any = None,
) -> Response:
    vm = vm_of(ctx, server)
    # The API's advisor: which methods fit each database's layout, and why the others not.
    advice = server_advice(server.id, ctx.session, ctx.principal)
    policies = ctx.session.scalars(
        select(Policy)
        .where(Policy.targets.any(PolicyTarget.server_id == server.id))
        .order_by(Policy.name)
    ).all()
    points = ctx.session.scalars(
        select(RestorePoint)
        .where(RestorePoint.server_id == server.id)
        .order_by(RestorePoint.captured_at.desc(), RestorePoint.id.desc())
        .limit(10)
    ).all()
    all_forms: dict[Any, FormState] = {
        db.id: FormState(values=_database_values(db)) for db in server.databases
    }
    all_forms[NEW] = FormState(values={"name": "", "database_disk_key": "", "log_disk_key": ""})
    all_forms.update(forms or {})
    datastores = datastores_of(ctx.session, [vm]) if vm else {}
    where = {
        d.device_key: (d.device_name or d.lun_uuid or "LUN").rsplit("/", 1)[-1]
        if d.backing.startswith("rdm")
        else datastores.get((vm.connection_id, d.datastore_moref), d.datastore_moref or "")
        for d in (vm.disks if vm else [])
    }
    uses: dict[int, list[str]] = {}
    for db in server.databases:
        if db.database_disk_key is not None:
            uses.setdefault(db.database_disk_key, []).append(f"{db.name} database")
        if db.log_disk_key is not None:
            uses.setdefault(db.log_disk_key, []).append(f"{db.name} logs")
    return render(
        ctx.request,
        "servers/detail.html",
        {
            "section": "servers",
            "server": server,
            "vcenter": ctx.session.get(Connection, server.connection_id)
            if server.connection_id
            else None,
            "vm": vm,
            "disks": {d.device_key: d for d in vm.disks} if vm else {},
            "where": where,
            "uses": uses,
            "layouts": list(DatabaseLayout),
            "layout_for_backing": layout_for_backing,
            "forms": all_forms,
            "advice": advice,
            "policies": policies,
            "points": points,
            "holds": holds_by_point(ctx.session, list(points)) if points else {},
            "revertible": {p.id for p in points if revertible(p)},
            "databases": {d.id: d.name for d in server.databases},
            "policy_names": {p.id: p.name for p in policies},
            "agent": agent_status(ctx.session, server.id),
            "enrollment": enrollment,
        },
        user=ctx.user,
        status_code=status_code,
    )


@router.get("/servers/{server_id}")
def server_detail(request: Request, server_id: int) -> Response:
    with signed_in(request) as ctx:
        return _server_page(ctx, get_server(ctx.session, server_id))


@router.post("/servers/{server_id}/agent/enroll")
def agent_enroll(request: Request, server_id: int, form: Form) -> Response:
    """A one-time code, shown once on the page with the command to run in the guest."""
    with signed_in(request, Permission.MANAGE_CONNECTIONS, form=form, check_form=True) as ctx:
        server = get_server(ctx.session, server_id)
        enrollment = new_enrollment(request, ctx.session, server.id, ctx.principal)
        return _server_page(ctx, server, enrollment=enrollment)


def _optional_key(form: FormData, name: str, state: FormState) -> int | None:
    raw = text(form, name)
    if raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        state.add(name, "Choose one of the VM's disks.")
        return None


def _database_fields(form: FormData, state: FormState, has_inventory: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": text(form, "name"),
        "database_disk_key": _optional_key(form, "database_disk_key", state),
        "log_disk_key": _optional_key(form, "log_disk_key", state),
    }
    if not has_inventory:
        # Without the VM's disks the layout cannot be derived: the operator states it.
        data["layout"] = text(form, "layout") or None
    return data


@router.post("/servers/{server_id}/databases")
def database_add(request: Request, server_id: int, form: Form) -> Response:
    with signed_in(request, MANAGE, form=form, check_form=True) as ctx:
        server = get_server(ctx.session, server_id)
        state = FormState(values=values_of(form))
        data = _database_fields(form, state, vm_of(ctx, server) is not None)
        try:
            body = DatabaseIn.model_validate(data)
        except ValidationError as exc:
            apply_validation_error(state, exc, model_field="name")
            return _server_page(ctx, server, {NEW: state}, status_code=422)
        if state.failed:
            return _server_page(ctx, server, {NEW: state}, status_code=422)
        try:
            db = add_database(server.id, body, ctx.session, ctx.principal)
        except Problem as exc:
            ctx.session.rollback()
            apply_problem(state, exc)
            server = get_server(ctx.session, server_id)
            return _server_page(ctx, server, {NEW: state}, status_code=exc.status)
        flash(request, f"Database {db.name} mapped: {label(db.layout)}.")
        return RedirectResponse(f"/servers/{server.id}#db-{db.id}", status_code=303)


def _get_database(ctx: Ctx, server: ExchangeServer, database_id: int) -> ExchangeDatabase:
    for db in server.databases:
        if db.id == database_id:
            return db
    raise Problem(404, f"{server.name} has no database {database_id}")


@router.post("/servers/{server_id}/databases/{database_id}")
def database_update(request: Request, server_id: int, database_id: int, form: Form) -> Response:
    with signed_in(request, MANAGE, form=form, check_form=True) as ctx:
        server = get_server(ctx.session, server_id)
        db = _get_database(ctx, server, database_id)
        state = FormState(values=values_of(form))
        has_inventory = vm_of(ctx, server) is not None
        data = _database_fields(form, state, has_inventory)
        current = {
            "name": db.name,
            "database_disk_key": db.database_disk_key,
            "log_disk_key": db.log_disk_key,
        }
        if not has_inventory:
            current["layout"] = db.layout.value
        changed = {k: v for k, v in data.items() if v != current.get(k)}
        if state.failed:
            return _server_page(ctx, server, {db.id: state}, status_code=422)
        if not changed:
            flash(request, f"Nothing changed for {db.name}.", "info")
            return RedirectResponse(f"/servers/{server.id}#db-{db.id}", status_code=303)
        try:
            body = DatabaseUpdate.model_validate(changed)
        except ValidationError as exc:
            apply_validation_error(state, exc, model_field="name")
            return _server_page(ctx, server, {db.id: state}, status_code=422)
        try:
            update_database(server.id, db.id, body, ctx.session, ctx.principal)
            ctx.session.flush()
        except Problem as exc:
            ctx.session.rollback()
            apply_problem(state, exc)
            server = get_server(ctx.session, server_id)
            return _server_page(ctx, server, {database_id: state}, status_code=exc.status)
        flash(request, f"Database {db.name} saved: {label(db.layout)}.")
        return RedirectResponse(f"/servers/{server.id}#db-{db.id}", status_code=303)


def _remove_page(
    ctx: Ctx, server: ExchangeServer, db: ExchangeDatabase, error=None, status_code=200
):
    covering = ctx.session.scalars(
        select(Policy.name)
        .join(PolicyTarget, PolicyTarget.policy_id == Policy.id)
        .where(PolicyTarget.database_id == db.id)
        .order_by(Policy.name)
    ).all()
    consequence = "Its restore points stay in the catalog."
    if covering:
        consequence = (
            f"The policies that protect it stop doing so: {', '.join(covering)}. " + consequence
        )
    return render(
        ctx.request,
        "confirm_delete.html",
        {
            "section": "servers",
            "what": "database",
            "name": f"{db.name}",
            "action": f"/servers/{server.id}/databases/{db.id}/delete",
            "cancel": f"/servers/{server.id}#db-{db.id}",
            "crumbs": [("/servers", "Exchange servers"), (f"/servers/{server.id}", server.name)],
            "verb": "Remove",
            "error": error,
            "consequence": f"Bulwark forgets where {db.name} on {server.name} lives; the "
            f"database itself is not touched. {consequence}",
        },
        user=ctx.user,
        status_code=status_code,
    )


@router.get("/servers/{server_id}/databases/{database_id}/delete")
def database_remove_confirm(request: Request, server_id: int, database_id: int) -> Response:
    with signed_in(request, MANAGE) as ctx:
        server = get_server(ctx.session, server_id)
        return _remove_page(ctx, server, _get_database(ctx, server, database_id))


@router.post("/servers/{server_id}/databases/{database_id}/delete")
def database_remove(request: Request, server_id: int, database_id: int, form: Form) -> Response:
    with signed_in(request, MANAGE, form=form, check_form=True) as ctx:
        server = get_server(ctx.session, server_id)
        db = _get_database(ctx, server, database_id)
        name = db.name
        delete_database(server.id, db.id, ctx.session, ctx.principal)
        flash(request, f"Database {name} removed from {server.name}.")
        return RedirectResponse(f"/servers/{server.id}#databases", status_code=303)
