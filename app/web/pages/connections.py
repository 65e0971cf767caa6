"""Connections: list, read, create, change, delete — through the API's own functions."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy import func, select
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from app.api.problems import Problem
from app.api.routes.connections import (
    SORTABLE,
    create_connection,
    delete_connection,
    get_connection,
    sync_connection,
    test_connection,
    trust_certificate,
    update_connection,
)
from app.api.schemas.common import normalise_thumbprint
from app.api.schemas.connections import ConnectionCreate, ConnectionUpdate
from app.db.models import Connection, ExchangeServer, Policy, PolicyTarget, VirtualMachine
from app.domain.connections import ConnectionKind, ConnectionStatus
from app.security.roles import Permission
from app.web.context import Ctx, Form, signed_in
from app.web.errors import WebRoute
from app.web.forms import (
    FormState,
    apply_problem,
    apply_validation_error,
    checkbox,
    format_options,
    optional,
    parse_options,
    text,
    values_of,
)
from app.web.paging import enum_or_none, page_of
from app.web.templating import flash, render

router = APIRouter(route_class=WebRoute)
MANAGE = Permission.MANAGE_CONNECTIONS
DEFAULT_PORTS = {
    ConnectionKind.VCENTER: 443,
    ConnectionKind.ARRAY: None,
    ConnectionKind.REPOSITORY: None,
    ConnectionKind.MAIL: 993,
}


# The last test's outcome, shown once on the connection's page (after the redirect).
TEST_RESULT = "connection_test"
# The certificate a connection presented when its test failed on trust, per connection id:
# the only thumbprint the "Trust this certificate" form will accept.
TRUST_OFFERS = "trust_offers"
MAX_MESSAGE = 500


def _password(form: FormData, name: str = "password") -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and value != "" else None


def _secrets(form: FormData, data: dict[str, Any]) -> None:
    """Write-only fields: sent on only when something was typed."""
    for name in ("password", "guest_password"):
        if (value := _password(form, name)) is not None:
            data[name] = value


def _fields(form: FormData, state: FormState) -> dict[str, Any]:
    """The form as the API's body takes it (blank optional fields left out)."""
    return {
        "name": text(form, "name"),
        "host": text(form, "host"),
        "port": optional(form, "port"),
        "username": text(form, "username"),
        "guest_username": text(form, "guest_username"),
        "verify_tls": checkbox(form, "verify_tls"),
        "trusted_thumbprint": optional(form, "trusted_thumbprint"),
        "options": parse_options(text(form, "options"), state),
        "description": text(form, "description"),
    }


def _values(conn: Connection) -> dict[str, Any]:
    return {
        "name": conn.name,
        "kind": conn.kind.value,
        "host": conn.host,
        "port": "" if conn.port is None else str(conn.port),
        "username": conn.username,
        "guest_username": conn.guest_username,
        "verify_tls": "on" if conn.verify_tls else "",
        "trusted_thumbprint": conn.trusted_thumbprint or "",
        "options": format_options(conn.options),
        "description": conn.description,
    }


def _form_page(
    ctx: Ctx, state: FormState, conn: Connection | None = None, status_code: int = 200
) -> Response:
    return render(
        ctx.request,
        "connections/form.html",
        {
            "section": "connections",
            "conn": conn,
            "form": state,
            "kinds": list(ConnectionKind),
            "default_ports": DEFAULT_PORTS,
        },
        user=ctx.user,
        status_code=status_code,
    )


@router.get("/connections")
def connection_list(request: Request, kind: str | None = None, page: int = 1) -> Response:
    with signed_in(request) as ctx:
        chosen = enum_or_none(ConnectionKind, kind)
        query = select(Connection)
        if chosen is not None:
            query = query.where(Connection.kind == chosen)
        items, pager = page_of(
            ctx.session,
            query,
            page=page,
            sortable=SORTABLE,
            default_sort="name",
            params={"kind": chosen.value if chosen else None},
        )
        per_kind = dict(
            ctx.session.execute(
                select(Connection.kind, func.count()).group_by(Connection.kind)
            ).all()
        )
        return render(
            request,
            "connections/list.html",
            {
                "section": "connections",
                "items": items,
                "pager": pager,
                "kind": chosen,
                "kinds": list(ConnectionKind),
                "per_kind": per_kind,
                "total_all": sum(per_kind.values()),
            },
            user=ctx.user,
        )


@router.get("/connections/new")
def connection_new(request: Request, kind: str | None = None) -> Response:
    with signed_in(request, MANAGE) as ctx:
        chosen = enum_or_none(ConnectionKind, kind) or ConnectionKind.VCENTER
        port = DEFAULT_PORTS[chosen]
        state = FormState(
            values={"kind": chosen.value, "verify_tls": "on", "port": port or ""},
        )
        return _form_page(ctx, state)


@router.post("/connections/new")
def connection_create(request: Request, form: Form) -> Response:
    with signed_in(request, MANAGE, form=form, check_form=True) as ctx:
        state = FormState(values=values_of(form))
        data = {**_fields(form, state), "kind": text(form, "kind")}
        _secrets(form, data)
        try:
            body = ConnectionCreate.model_validate(data)
        except ValidationError as exc:
            apply_validation_error(state, exc, model_field="name")
            return _form_page(ctx, state, status_code=422)
        if state.failed:
            return _form_page(ctx, state, status_code=422)
        try:
            conn = create_connection(body, ctx.session, request, ctx.principal)
        except Problem as exc:
            ctx.session.rollback()
            apply_problem(state, exc)
            return _form_page(ctx, state, status_code=exc.status)
        flash(
            request,
            f"Connection '{conn.name}' added. Its status stays untested until "
            "Bulwark next reaches it.",
        )
        return RedirectResponse(f"/connections/{conn.id}", status_code=303)


@router.get("/connections/{connection_id}")
def connection_detail(request: Request, connection_id: int) -> Response:
    with signed_in(request) as ctx:
        conn = get_connection(ctx.session, connection_id)
        policies = ctx.session.scalars(
            select(Policy).where(Policy.repository_id == conn.id).order_by(Policy.name)
        ).all()
        servers = ctx.session.scalars(
            select(ExchangeServer)
            .where(ExchangeServer.connection_id == conn.id)
            .order_by(ExchangeServer.name)
        ).all()
        vms, synced = _inventory_size(ctx, conn.id)
        result = request.session.get(TEST_RESULT)
        if result and result.get("id") == conn.id:
            request.session.pop(TEST_RESULT)
        else:
            result = None
        offer = _trust_offer(request, conn)
        return render(
            request,
            "connections/detail.html",
            {
                "section": "connections",
                "conn": conn,
                "options_text": format_options(conn.options),
                "policies": policies,
                "servers": servers,
                "vm_count": vms,
                "synced_at": synced,
                "test": result,
                "trust_offer": offer,
            },
            user=ctx.user,
        )


def _inventory_size(ctx: Ctx, connection_id: int) -> tuple[int, Any]:
    """How many VMs the last sync stored, and when it ran."""
    vms, synced = ctx.session.execute(
        select(func.count(VirtualMachine.id), func.max(VirtualMachine.synced_at)).where(
            VirtualMachine.connection_id == connection_id
        )
    ).one()
    return int(vms or 0), synced


def _trust_offer(request: Request, conn: Connection) -> str | None:
    """The thumbprint this connection presented at its last failed test, unless trusted."""
    offer = request.session.get(TRUST_OFFERS, {}).get(str(conn.id))
    if not offer or offer == conn.trusted_thumbprint or conn.status != ConnectionStatus.FAILED:
        return None
    return offer


def _remember_test(request: Request, conn: Connection, result) -> None:
    offers = dict(request.session.get(TRUST_OFFERS, {}))
    if result.presented_thumbprint:
        offers[str(conn.id)] = normalise_thumbprint(result.presented_thumbprint)
    else:
        offers.pop(str(conn.id), None)
    # A handful of connections at most: the session cookie stays small.
    request.session[TRUST_OFFERS] = dict(list(offers.items())[-5:])
    request.session[TEST_RESULT] = {
        "id": conn.id,
        "ok": bool(result.ok),
        "message": str(result.message)[:MAX_MESSAGE],
        "about": result.about,
        "presented_thumbprint": result.presented_thumbprint,
    }


@router.post("/connections/{connection_id}/test")
def connection_test(request: Request, connection_id: int, form: Form) -> Response:
    """Sign in to the vCenter and show what happened (the API's test, audited there)."""
    with signed_in(request, MANAGE, form=form, check_form=True) as ctx:
        conn = get_connection(ctx.session, connection_id)
        try:
            result = test_connection(conn.id, ctx.session, request, ctx.principal)
        except Problem as exc:
            ctx.session.rollback()
            flash(request, exc.detail[:1].upper() + exc.detail[1:], "bad")
            return RedirectResponse(f"/connections/{conn.id}", status_code=303)
        _remember_test(request, conn, result)
        return RedirectResponse(f"/connections/{conn.id}#test-result", status_code=303)


def _trust_page(
    ctx: Ctx, conn: Connection, offer: str | None, error: str | None = None, status_code=200
) -> Response:
    return render(
        ctx.request,
        "connections/trust.html",
        {"section": "connections", "conn": conn, "offer": offer, "error": error},
        user=ctx.user,
        status_code=status_code,
    )


@router.get("/connections/{connection_id}/trust")
def connection_trust_confirm(request: Request, connection_id: int) -> Response:
    with signed_in(request, MANAGE) as ctx:
        conn = get_connection(ctx.session, connection_id)
        return _trust_page(ctx, conn, _trust_offer(request, conn))


@router.post("/connections/{connection_id}/trust")
def connection_trust(request: Request, connection_id: int, form: Form) -> Response:
    """Trust exactly the certificate the last test was shown, then test again."""
    with signed_in(request, MANAGE, form=form, check_form=True) as ctx:
        conn = get_connection(ctx.session, connection_id)
        offer = _trust_offer(request, conn)
        submitted = normalise_thumbprint(text(form, "thumbprint") or None)
        if offer is None or submitted != offer:
            return _trust_page(
                ctx,
                conn,
                offer,
                "This is not the certificate the connection presented at its last test, so "
                "nothing was trusted. Test the connection again and trust what it shows.",
                status_code=409,
            )
        # The offer is what the server presented at the last test: the expected fingerprint.
        trust_certificate(ctx.session, conn, offer, ctx.principal.actor)
        ctx.session.flush()
        result = test_connection(conn.id, ctx.session, request, ctx.principal)
        _remember_test(request, conn, result)
        flash(request, f"Certificate {offer} is now trusted for '{conn.name}'.")
        return RedirectResponse(f"/connections/{conn.id}#test-result", status_code=303)


@router.get("/connections/{connection_id}/edit")
def connection_edit(request: Request, connection_id: int) -> Response:
    with signed_in(request, MANAGE) as ctx:
        conn = get_connection(ctx.session, connection_id)
        return _form_page(ctx, FormState(values=_values(conn)), conn)


def _changes(conn: Connection, body: ConnectionUpdate) -> set[str]:
    """The fields the operator actually changed, so the audit log names only those."""
    changed = set()
    for name in ("name", "host", "port", "username", "verify_tls", "options", "description"):
        if getattr(body, name) != getattr(conn, name):
            changed.add(name)
    if body.guest_username is not None and body.guest_username != conn.guest_username:
        changed.add("guest_username")
    if normalise_thumbprint(body.trusted_thumbprint) != conn.trusted_thumbprint:
        changed.add("trusted_thumbprint")
    for secret in ("password", "guest_password"):
        if getattr(body, secret) is not None:
            changed.add(secret)
    return changed


@router.post("/connections/{connection_id}/edit")
def connection_update(request: Request, connection_id: int, form: Form) -> Response:
    with signed_in(request, MANAGE, form=form, check_form=True) as ctx:
        conn = get_connection(ctx.session, connection_id)
        state = FormState(values={**values_of(form), "kind": conn.kind.value})
        data = _fields(form, state)
        if conn.kind != ConnectionKind.VCENTER:
            del data["guest_username"]
        _secrets(form, data)
        try:
            full = ConnectionUpdate.model_validate(data)
        except ValidationError as exc:
            apply_validation_error(state, exc, model_field="name")
            return _form_page(ctx, state, conn, status_code=422)
        if state.failed:
            return _form_page(ctx, state, conn, status_code=422)
        changed = _changes(conn, full)
        if not changed:
            flash(request, "Nothing changed.", "info")
            return RedirectResponse(f"/connections/{conn.id}", status_code=303)
        body = ConnectionUpdate.model_validate({k: v for k, v in data.items() if k in changed})
        try:
            update_connection(conn.id, body, ctx.session, request, ctx.principal)
            ctx.session.flush()
        except Problem as exc:
            ctx.session.rollback()
            apply_problem(state, exc)
            return _form_page(ctx, state, get_connection(ctx.session, connection_id), exc.status)
        flash(request, f"Connection '{conn.name}' saved.")
        return RedirectResponse(f"/connections/{conn.id}", status_code=303)


@router.post("/connections/{connection_id}/sync")
def connection_sync(request: Request, connection_id: int, form: Form) -> Response:
    """Read the vCenter's inventory now, through the API's sync, and show what it found."""
    with signed_in(request, Permission.RUN_BACKUP, form=form, check_form=True) as ctx:
        conn = get_connection(ctx.session, connection_id)
        started = time.monotonic()
        summary, error, status = None, None, 200
        try:
            summary = sync_connection(conn.id, ctx.session, request, ctx.principal)
            ctx.session.flush()
        except Problem as exc:
            # The API already recorded the failure on the connection and in the audit log.
            ctx.session.rollback()
            error, status = exc.detail[:1].upper() + exc.detail[1:], exc.status
            conn = get_connection(ctx.session, connection_id)
        discovered = (
            dict(
                ctx.session.execute(
                    select(ExchangeServer.name, ExchangeServer.id).where(
                        ExchangeServer.name.in_(summary.servers_discovered)
                    )
                ).all()
            )
            if summary and summary.servers_discovered
            else {}
        )
        vms, synced = _inventory_size(ctx, conn.id)
        return render(
            request,
            "connections/synced.html",
            {
                "section": "connections",
                "conn": conn,
                "summary": summary,
                "error": error,
                "discovered": discovered,
                "seconds": time.monotonic() - started,
                "vm_count": vms,
                "synced_at": synced,
            },
            user=ctx.user,
            status_code=status,
        )


def _dependents(ctx: Ctx, conn: Connection) -> list[tuple[str, list[tuple[str, str]]]]:
    """What relies on a connection, to list on its delete page: a vCenter's servers and the
    policies covering them, a repository's policies."""
    groups: list[tuple[str, list[tuple[str, str]]]] = []
    servers = ctx.session.execute(
        select(ExchangeServer.id, ExchangeServer.name)
        .where(ExchangeServer.connection_id == conn.id)
        .order_by(ExchangeServer.name)
    ).all()
    if servers:
        groups.append(("Exchange servers", [(name, f"/servers/{i}") for i, name in servers]))
    covering = (
        select(PolicyTarget.policy_id).where(PolicyTarget.server_id.in_([i for i, _ in servers]))
        if servers
        else None
    )
    where = Policy.repository_id == conn.id
    if covering is not None:
        where = where | Policy.id.in_(covering)
    policies = ctx.session.execute(
        select(Policy.id, Policy.name).where(where).order_by(Policy.name)
    ).all()
    if policies:
        groups.append(("Policies", [(name, f"/policies/{i}") for i, name in policies]))
    return groups


def _delete_page(ctx: Ctx, conn: Connection, error: str | None = None, status_code=200):
    return render(
        ctx.request,
        "confirm_delete.html",
        {
            "section": "connections",
            "what": "connection",
            "name": conn.name,
            "action": f"/connections/{conn.id}/delete",
            "cancel": f"/connections/{conn.id}",
            "error": error,
            "consequence": "Bulwark forgets its address and stored credentials.",
            "dependents": _dependents(ctx, conn),
        },
        user=ctx.user,
        status_code=status_code,
    )


@router.get("/connections/{connection_id}/delete")
def connection_delete_confirm(request: Request, connection_id: int) -> Response:
    with signed_in(request, MANAGE) as ctx:
        return _delete_page(ctx, get_connection(ctx.session, connection_id))


@router.post("/connections/{connection_id}/delete")
def connection_delete(request: Request, connection_id: int, form: Form) -> Response:
    with signed_in(request, MANAGE, form=form, check_form=True) as ctx:
        conn = get_connection(ctx.session, connection_id)
        name = conn.name
        try:
            delete_connection(conn.id, ctx.session, ctx.principal)
            ctx.session.flush()
        except Problem as exc:
            ctx.session.rollback()
            conn = get_connection(ctx.session, connection_id)
            return _delete_page(ctx, conn, exc.detail, exc.status)
        flash(request, f"Connection '{name}' deleted.")
        return RedirectResponse("/connections", status_code=303)
