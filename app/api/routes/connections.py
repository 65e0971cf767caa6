"""Connections to vCenter, arrays, repositories and mail servers."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import select

from app.adapters import vsphere
from app.api import API_PREFIX
from app.api.deps import DbSession, Reader, require, runtime
from app.api.pagination import Page, PageWindow, paginate
from app.api.problems import Problem, conflict, found, invalid
from app.api.schemas.common import normalise_thumbprint
from app.api.schemas.connections import (
    ConnectionCreate,
    ConnectionOut,
    ConnectionUpdate,
    TrustIn,
)
from app.api.schemas.inventory import ConnectionTestOut, SyncOut
from app.audit import record
from app.db.models import Connection, ExchangeServer, Policy
from app.domain.connections import ConnectionKind, ConnectionStatus
from app.inventory import sync, vcenter
from app.security.roles import Permission

router = APIRouter(prefix=API_PREFIX + "/connections", tags=["connections"])
Admin = require(Permission.MANAGE_CONNECTIONS)
SORTABLE = {
    "name": Connection.name,
    "kind": Connection.kind,
    "status": Connection.status,
    "created_at": Connection.created_at,
}


def get_connection(session, connection_id: int) -> Connection:
    return found(session.get(Connection, connection_id), "connection", connection_id)


def _name_taken(session, name: str, except_id: int | None = None) -> None:
    q = select(Connection.id).where(Connection.name == name)
    if except_id is not None:
        q = q.where(Connection.id != except_id)
    if session.scalar(q) is not None:
        raise conflict(f"a connection named '{name}' already exists")


@router.get("", response_model=Page[ConnectionOut], summary="List connections")
def list_connections(
    session: DbSession,
    _: Reader,
    kind: ConnectionKind | None = None,
    status: ConnectionStatus | None = None,
    q: str | None = Query(default=None, max_length=64, description="Name contains"),
    sort: str | None = Query(default=None, description="name, kind, status, created_at; '-' desc"),
    window: PageWindow = Depends(),
):
    query = select(Connection)
    if kind:
        query = query.where(Connection.kind == kind)
    if status:
        query = query.where(Connection.status == status)
    if q:
        query = query.where(Connection.name.contains(q, autoescape=True))
    return paginate(session, query, window, sort, sortable=SORTABLE, default_sort="name")


@router.post("", response_model=ConnectionOut, status_code=201, summary="Add a connection")
def create_connection(
    body: ConnectionCreate, session: DbSession, request: Request, principal=Admin
):
    _name_taken(session, body.name)
    conn = Connection(
        **body.model_dump(exclude={"password", "guest_password", "trusted_thumbprint"})
    )
    if conn.kind == ConnectionKind.REPOSITORY:
        conn.options = _repository_options(session, conn.options)
    if conn.kind == ConnectionKind.MAIL:
        conn.options = _mail_options(conn.options)
    conn.trusted_thumbprint = normalise_thumbprint(body.trusted_thumbprint)
    box = runtime(request).secrets
    if body.password is not None:
        conn.secret_ciphertext = box.seal(body.password.get_secret_value(), "connection")
    if body.guest_password is not None:
        conn.guest_secret_ciphertext = box.seal(body.guest_password.get_secret_value(), "guest")
    session.add(conn)
    session.flush()
    record(
        session,
        principal.actor,
        "connection.create",
        "connection",
        conn.id,
        name=conn.name,
        kind=conn.kind,
        host=conn.host,
        secret_set=body.password is not None,
    )
    if conn.trusted_thumbprint:
        record(
            session,
            principal.actor,
            "connection.trust_certificate",
            "connection",
            conn.id,
            thumbprint=conn.trusted_thumbprint,
        )
    return conn


@router.get("/{connection_id}", response_model=ConnectionOut, summary="Read a connection")
def read_connection(connection_id: int, session: DbSession, _: Reader):
    return get_connection(session, connection_id)


@router.patch("/{connection_id}", response_model=ConnectionOut, summary="Change a connection")
def update_connection(
    connection_id: int,
    body: ConnectionUpdate,
    session: DbSession,
    request: Request,
    principal=Admin,
):
    conn = get_connection(session, connection_id)
    changes = body.model_dump(
        exclude_unset=True, exclude={"password", "guest_password", "trusted_thumbprint"}
    )
    if "name" in changes and changes["name"] != conn.name:
        _name_taken(session, changes["name"], conn.id)
    if conn.kind == ConnectionKind.REPOSITORY and changes.get("options") is not None:
        changes["options"] = _repository_options(session, changes["options"], conn.id)
        if changes["options"] != conn.options:
            conn.status = ConnectionStatus.UNTESTED
    if conn.kind == ConnectionKind.MAIL and changes.get("options") is not None:
        changes["options"] = _mail_options(changes["options"])
    for field, value in changes.items():
        setattr(conn, field, value)
    changed = sorted(changes)
    if "password" in body.model_fields_set and body.password is not None:
        conn.secret_ciphertext = runtime(request).secrets.seal(
            body.password.get_secret_value(), "connection"
        )
        changed.append("password")
    if "guest_password" in body.model_fields_set and body.guest_password is not None:
        conn.guest_secret_ciphertext = runtime(request).secrets.seal(
            body.guest_password.get_secret_value(), "guest"
        )
        changed.append("guest_password")
    if "trusted_thumbprint" in body.model_fields_set:
        wanted = normalise_thumbprint(body.trusted_thumbprint)
        if wanted is not None and wanted != conn.trusted_thumbprint:
            # Trusting goes through POST …/trust, which checks what the server presents.
            raise invalid(
                f"to trust a certificate, POST /api/v1/connections/{conn.id}/trust with "
                '{"fingerprint": …}: it is checked against the certificate the server '
                "presents; here a trusted certificate can only be cleared (null)",
                "trusted_thumbprint",
            )
        if wanted is None and conn.trusted_thumbprint is not None:
            conn.trusted_thumbprint = None
            record(
                session,
                principal.actor,
                "connection.distrust_certificate",
                "connection",
                conn.id,
            )
            changed.append("trusted_thumbprint")
    if {"host", "port", "username", "password", "verify_tls", "trusted_thumbprint"} & set(changed):
        conn.status = ConnectionStatus.UNTESTED
    record(session, principal.actor, "connection.update", "connection", conn.id, fields=changed)
    return conn


@router.delete("/{connection_id}", status_code=204, summary="Remove a connection")
def delete_connection(connection_id: int, session: DbSession, principal=Admin):
    conn = get_connection(session, connection_id)
    if conn.kind == ConnectionKind.REPOSITORY:
        _refuse_locked_repository(session, conn)
    users = session.scalars(select(Policy.name).where(Policy.repository_id == conn.id)).all()
    if users:
        raise conflict(
            f"connection '{conn.name}' is the repository of policies: "
            f"{', '.join(users)}; change them first"
        )
    servers = session.scalars(
        select(ExchangeServer.name).where(ExchangeServer.connection_id == conn.id)
    ).all()
    if servers:
        raise conflict(
            f"connection '{conn.name}' still hosts Exchange servers: "
            f"{', '.join(servers)}; remove them first"
        )
    session.delete(conn)
    record(
        session, principal.actor, "connection.delete", "connection", connection_id, name=conn.name
    )
    return Response(status_code=204)


def _repository_options(session, options: dict, except_id: int | None = None) -> dict:
    from app.repository.connection import place_of, validate_options

    try:
        options = validate_options(options)
    except ValueError as exc:
        raise invalid(str(exc), "options") from exc
    path = place_of(options)
    if except_id is not None:
        old = (session.get(Connection, except_id).options or {}).get("immutable_days")
        if old and (options.get("immutable_days") or 0) < old:
            raise conflict(
                f"this repository is immutable for {old} day(s): that cannot be shortened "
                "or switched off"
            )
    others = session.scalars(
        select(Connection).where(
            Connection.kind == ConnectionKind.REPOSITORY, Connection.id != (except_id or 0)
        )
    )
    # Two connections on one directory would each expire and collect the other's data.
    for other in others:
        if path is not None and place_of(other.options or {}) == path:
            raise conflict(f"repository '{other.name}' already lives in {path}")
    return options


def _refuse_locked_repository(session, conn: Connection) -> None:
    """An immutable repository's connection goes only when nothing in it is locked any more
    (for every role: the lock is the point of it)."""
    days = (conn.options or {}).get("immutable_days")
    if not days:
        return
    from datetime import timedelta

    from sqlalchemy import func

    from app.db.models import RestorePointCopy
    from app.db.types import utcnow

    newest = session.scalar(
        select(func.max(RestorePointCopy.created_at)).where(
            RestorePointCopy.connection_id == conn.id
        )
    )
    if newest is None:
        return
    until = newest + timedelta(days=days)
    if until > utcnow():
        raise conflict(
            f"repository '{conn.name}' is immutable: what it holds is locked until "
            f"{until:%Y-%m-%d %H:%M} UTC; its connection cannot be removed before then"
        )


def _mail_options(options: dict) -> dict:
    from app.mailboxes.connections import InvalidMailOptions, validate_options

    try:
        return validate_options(options)
    except InvalidMailOptions as exc:
        raise invalid(str(exc), "options") from exc


def trust_certificate(session, conn: Connection, fingerprint: str, actor) -> None:
    """Trust one certificate for ``conn`` (audited); the caller checked it was presented."""
    conn.trusted_thumbprint = normalise_thumbprint(fingerprint)
    conn.status = ConnectionStatus.UNTESTED
    record(
        session,
        actor,
        "connection.trust_certificate",
        "connection",
        conn.id,
        thumbprint=conn.trusted_thumbprint,
    )


@router.post(
    "/{connection_id}/trust",
    response_model=ConnectionOut,
    summary="Trust the certificate the vCenter presents, given its expected fingerprint",
)
def trust_connection(connection_id: int, body: TrustIn, session: DbSession, principal=Admin):
    conn = _vcenter(session, connection_id)
    expected = normalise_thumbprint(body.fingerprint)
    try:
        presented = normalise_thumbprint(vsphere.fetch_thumbprint(conn.host, conn.port or 443))
    except vsphere.VSphereError as exc:
        raise Problem(
            502, f"vCenter '{conn.name}': {exc}; nothing was trusted", type_="/problems/vcenter"
        ) from exc
    if presented != expected:
        record(
            session,
            principal.actor,
            "connection.trust_certificate",
            "connection",
            conn.id,
            outcome="failure",
            expected=expected,
            presented=presented,
        )
        session.commit()
        raise Problem(
            409,
            f"'{conn.name}' presents a certificate with fingerprint {presented}, not "
            f"{expected}; nothing was trusted. Check the fingerprint with the vCenter's "
            "administrator: a different certificate may mean someone is in between.",
            type_="/problems/certificate-mismatch",
            title="The certificate presented is not the one expected",
        )
    trust_certificate(session, conn, expected, principal.actor)
    return conn


def _vcenter(session, connection_id: int) -> Connection:
    conn = get_connection(session, connection_id)
    if conn.kind != ConnectionKind.VCENTER:
        raise invalid(f"connection '{conn.name}' is a {conn.kind}; only vCenter can do this")
    return conn


@router.post(
    "/{connection_id}/test",
    response_model=ConnectionTestOut,
    summary="Sign in to the system and report what happened",
)
def test_connection(connection_id: int, session: DbSession, request: Request, principal=Admin):
    conn = get_connection(session, connection_id)
    if conn.kind == ConnectionKind.ARRAY:
        from app.api.routes.arrays import test_array

        return test_array(session, conn, principal.actor)
    if conn.kind == ConnectionKind.REPOSITORY:
        from app.api.routes.repositories import test_repository

        return test_repository(session, conn, principal.actor, runtime(request))
    if conn.kind == ConnectionKind.MAIL:  # signs in and lists the protected mailboxes
        from app.mailboxes.connections import test_connection as test_mail

        result = test_mail(conn, runtime(request).secrets)
    else:
        conn = _vcenter(session, connection_id)
        result = vcenter.test_connection(conn, runtime(request).secrets)
    record(
        session,
        principal.actor,
        "connection.test",
        "connection",
        conn.id,
        outcome="success" if result.ok else "failure",
        message=result.message,
    )
    return result


@router.post(
    "/{connection_id}/sync",
    response_model=SyncOut,
    summary="Read the vCenter inventory now and discover Exchange servers",
)
def sync_connection(
    connection_id: int,
    session: DbSession,
    request: Request,
    principal=require(Permission.RUN_BACKUP),
):
    conn = _vcenter(session, connection_id)
    try:
        with vcenter.open_client(conn, runtime(request).secrets) as client:
            inventory = vsphere.read_inventory(client)
    except vsphere.VSphereError as exc:
        conn.status, conn.last_error = ConnectionStatus.FAILED, str(exc)
        record(
            session,
            principal.actor,
            "inventory.sync",
            "connection",
            conn.id,
            outcome="failure",
            message=str(exc),
        )
        session.commit()
        raise Problem(502, f"vCenter '{conn.name}': {exc}", type_="/problems/vcenter") from exc
    conn.status, conn.last_error = ConnectionStatus.OK, None
    return sync.sync_connection(session, conn.id, inventory, principal.actor)
