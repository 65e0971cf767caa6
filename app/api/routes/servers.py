"""Protected Exchange servers and the disks holding their databases and logs."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.api import API_PREFIX
from app.api.deps import DbSession, Reader, require
from app.api.pagination import Page, PageWindow, paginate
from app.api.problems import conflict, found, invalid, not_found
from app.api.schemas.servers import (
    DatabaseAdvice,
    DatabaseIn,
    DatabaseOut,
    DatabaseUpdate,
    MethodAdvice,
    ServerAdvice,
    ServerCreate,
    ServerOut,
    ServerUpdate,
)
from app.audit import record
from app.db.models import (
    Connection,
    ExchangeDatabase,
    ExchangeServer,
    VirtualDisk,
    VirtualMachine,
)
from app.domain.advisor import advise
from app.domain.connections import ConnectionKind
from app.domain.protection import (
    DatabaseLayout,
    LayoutError,
    layout_for_backing,
    layout_from_disks,
)
from app.security.roles import Permission
from app.strategies import DECLARATIONS

router = APIRouter(prefix=API_PREFIX + "/servers", tags=["exchange servers"])
Manager = require(Permission.MANAGE_PROTECTION)
SORTABLE = {"name": ExchangeServer.name, "created_at": ExchangeServer.created_at}


def get_server(session: Session, server_id: int) -> ExchangeServer:
    return found(session.get(ExchangeServer, server_id), "Exchange server", server_id)


def _check_connection(session: Session, connection_id: int | None) -> None:
    if connection_id is None:
        return
    conn = session.get(Connection, connection_id)
    if conn is None:
        raise invalid(f"connection {connection_id} does not exist", "connection_id")
    if conn.kind != ConnectionKind.VCENTER:
        raise invalid(f"connection '{conn.name}' is a {conn.kind}, not a vCenter", "connection_id")


def _server_disks(session: Session, server: ExchangeServer) -> dict[int, VirtualDisk] | None:
    """The VM's disks from the inventory, or None when the VM has not been synced."""
    if server.connection_id is None or server.vm_moref is None:
        return None
    vm = session.scalar(
        select(VirtualMachine)
        .where(
            VirtualMachine.connection_id == server.connection_id,
            VirtualMachine.moref == server.vm_moref,
        )
        .options(selectinload(VirtualMachine.disks))
    )
    return None if vm is None else {d.device_key: d for d in vm.disks}


def resolve_layout(
    disks: dict[int, VirtualDisk] | None,
    database_disk_key: int | None,
    log_disk_key: int | None,
    stated: DatabaseLayout | None,
) -> DatabaseLayout:
    """The layout follows from the disk's backing; a stated layout must agree with it."""
    if disks is None:
        if stated is None:
            raise invalid("the VM is not in the inventory, so give the layout explicitly", "layout")
        return stated
    try:
        return layout_from_disks(disks, database_disk_key, log_disk_key, stated)
    except LayoutError as exc:
        raise invalid(str(exc), exc.field) from exc


def _add_database(
    session: Session, server: ExchangeServer, body: DatabaseIn, disks: dict[int, VirtualDisk] | None
) -> ExchangeDatabase:
    if any(db.name == body.name for db in server.databases):
        raise conflict(f"server '{server.name}' already has a database '{body.name}'")
    layout = resolve_layout(disks, body.database_disk_key, body.log_disk_key, body.layout)
    db = ExchangeDatabase(
        name=body.name,
        database_disk_key=body.database_disk_key,
        log_disk_key=body.log_disk_key,
        layout=layout,
    )
    server.databases.append(db)
    return db


@router.get("", response_model=Page[ServerOut], summary="List Exchange servers")
def list_servers(
    session: DbSession,
    _: Reader,
    connection_id: int | None = None,
    q: str | None = Query(default=None, max_length=64, description="Name contains"),
    sort: str | None = Query(default=None, description="name, created_at; '-' for descending"),
    window: PageWindow = Depends(),
):
    query = select(ExchangeServer).options(selectinload(ExchangeServer.databases))
    if connection_id is not None:
        query = query.where(ExchangeServer.connection_id == connection_id)
    if q:
        query = query.where(ExchangeServer.name.contains(q, autoescape=True))
    return paginate(session, query, window, sort, sortable=SORTABLE, default_sort="name")


@router.post("", response_model=ServerOut, status_code=201, summary="Protect an Exchange server")
def create_server(body: ServerCreate, session: DbSession, principal=Manager):
    if session.scalar(select(ExchangeServer.id).where(ExchangeServer.name == body.name)):
        raise conflict(f"an Exchange server named '{body.name}' already exists")
    _check_connection(session, body.connection_id)
    server = ExchangeServer(**body.model_dump(exclude={"databases"}))
    session.add(server)
    disks = _server_disks(session, server)
    for db in body.databases:
        _add_database(session, server, db, disks)
    session.flush()
    record(
        session,
        principal.actor,
        "server.create",
        "server",
        server.id,
        name=server.name,
        databases=[d.name for d in server.databases],
    )
    return server


@router.get("/{server_id}", response_model=ServerOut, summary="Read an Exchange server")
def read_server(server_id: int, session: DbSession, _: Reader):
    return get_server(session, server_id)


@router.patch("/{server_id}", response_model=ServerOut, summary="Change an Exchange server")
def update_server(server_id: int, body: ServerUpdate, session: DbSession, principal=Manager):
    server = get_server(session, server_id)
    changes = body.model_dump(exclude_unset=True)
    if (
        "name" in changes
        and changes["name"] != server.name
        and session.scalar(select(ExchangeServer.id).where(ExchangeServer.name == changes["name"]))
    ):
        raise conflict(f"an Exchange server named '{changes['name']}' already exists")
    if "connection_id" in changes:
        _check_connection(session, changes["connection_id"])
    for field, value in changes.items():
        setattr(server, field, value)
    record(session, principal.actor, "server.update", "server", server.id, fields=sorted(changes))
    return server


@router.delete("/{server_id}", status_code=204, summary="Stop protecting an Exchange server")
def delete_server(server_id: int, session: DbSession, principal=Manager):
    server = get_server(session, server_id)
    session.delete(server)
    record(session, principal.actor, "server.delete", "server", server_id, name=server.name)
    return Response(status_code=204)


def _options_for(
    layout: DatabaseLayout,
    scope: str,
    log_layout: DatabaseLayout | None = None,
    unavailable: dict[str, str] | None = None,
) -> list[MethodAdvice]:
    declarations = [d for d in DECLARATIONS.values() if d.scope == scope]
    return [
        MethodAdvice.model_validate(o)
        for o in advise(declarations, layout, log_layout, unavailable)
    ]


DAG_STUN = (
    "{server} is a member of DAG {dag}: the stun of a VM snapshot (create and remove) can "
    "stop cluster heartbeats long enough for the DAG to fail the databases over. Check the "
    "cluster's SameSubnetDelay/SameSubnetThreshold and CrossSubnetDelay/CrossSubnetThreshold "
    "(Get-Cluster | Format-List *Subnet*) allow for it, or back up a passive copy"
)


def dag_of(session: Session, server: ExchangeServer, database: str) -> str | None:
    """The DAG the server's agent reports the database in (None without an agent)."""
    from app.protection.bindings.agents import agent_of

    agent = agent_of(session, server.id)
    for entry in (agent.inventory or {}).get("databases", []) if agent else []:
        if entry.get("name") == database and entry.get("dag"):
            return entry["dag"]
    return None


def _warn_dag(options: list[MethodAdvice], server: str, dag: str | None) -> list[MethodAdvice]:
    if dag:
        for o in options:
            if o.applies and DECLARATIONS[o.method].snapshots_disks:
                o.warnings.append(DAG_STUN.format(server=server, dag=dag))
    return options


def agent_unavailable(session: Session, server: ExchangeServer) -> dict[str, str]:
    """Why the agent stream cannot run on this server now: no agent, or an offline one."""
    from app.protection.bindings.agents import agent_of, is_online

    agent = agent_of(session, server.id)
    if agent is not None and agent.revoked_at is None and is_online(agent):
        return {}
    if agent is None or agent.revoked_at is not None:
        why = (
            f"no agent is enrolled on {server.name}: create an enrollment code on this "
            "server's page, install Bulwark in the guest and run 'bulwark agent enroll "
            "--url … --code …', then start the agent service"
        )
    else:
        seen = f"{agent.last_seen_at:%Y-%m-%d %H:%M} UTC" if agent.last_seen_at else "never"
        why = (
            f"the agent on {server.name} is offline (last seen {seen}): start the Bulwark "
            "agent service in the guest"
        )
    return {"agent_stream": why}


def log_layouts(session: Session, database_ids: Iterable[int]) -> dict[int, DatabaseLayout]:
    """The backing of each database's log disk, from the inventory, in one query (databases
    without a log disk of their own, or whose VM is not synced, are left out)."""
    ids = sorted(set(database_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(ExchangeDatabase.id, VirtualDisk.backing)
        .join(ExchangeServer, ExchangeServer.id == ExchangeDatabase.server_id)
        .join(
            VirtualMachine,
            (VirtualMachine.connection_id == ExchangeServer.connection_id)
            & (VirtualMachine.moref == ExchangeServer.vm_moref),
        )
        .join(
            VirtualDisk,
            (VirtualDisk.vm_id == VirtualMachine.id)
            & (VirtualDisk.device_key == ExchangeDatabase.log_disk_key),
        )
        .where(ExchangeDatabase.id.in_(ids))
    )
    return {db_id: layout for db_id, backing in rows if (layout := layout_for_backing(backing))}


@router.get(
    "/{server_id}/advice",
    response_model=ServerAdvice,
    summary="Which protection fits each database, and why the others do not",
)
def server_advice(server_id: int, session: DbSession, _: Reader):
    server = get_server(session, server_id)
    logs = log_layouts(session, (db.id for db in server.databases))
    unavailable = agent_unavailable(session, server)
    return ServerAdvice(
        server_id=server.id,
        server=server.name,
        # The application lives on the system disk, a VMDK.
        application=_options_for(DatabaseLayout.VMDK, "vm"),
        databases=[
            DatabaseAdvice(
                database_id=db.id,
                name=db.name,
                layout=db.layout,
                options=_warn_dag(
                    _options_for(db.layout, "database", logs.get(db.id), unavailable),
                    server.name,
                    dag_of(session, server, db.name),
                ),
            )
            for db in server.databases
        ],
    )


@router.post(
    "/{server_id}/databases",
    response_model=DatabaseOut,
    status_code=201,
    summary="Map a database and its logs to disks",
)
def add_database(server_id: int, body: DatabaseIn, session: DbSession, principal=Manager):
    server = get_server(session, server_id)
    db = _add_database(session, server, body, _server_disks(session, server))
    session.flush()
    record(
        session,
        principal.actor,
        "database.create",
        "database",
        db.id,
        server=server.name,
        name=db.name,
        layout=db.layout,
    )
    return db


def _get_database(session: Session, server_id: int, database_id: int) -> ExchangeDatabase:
    db = session.get(ExchangeDatabase, database_id)
    if db is None or db.server_id != server_id:
        raise not_found("database", database_id)
    return db


@router.patch(
    "/{server_id}/databases/{database_id}",
    response_model=DatabaseOut,
    summary="Change a database's disks",
)
def update_database(
    server_id: int, database_id: int, body: DatabaseUpdate, session: DbSession, principal=Manager
):
    db = _get_database(session, server_id, database_id)
    changes = body.model_dump(exclude_unset=True)
    if (
        "name" in changes
        and changes["name"] != db.name
        and any(other.name == changes["name"] for other in db.server.databases)
    ):
        raise conflict(f"server '{db.server.name}' already has a database '{changes['name']}'")
    merged = {
        "database_disk_key": changes.get("database_disk_key", db.database_disk_key),
        "log_disk_key": changes.get("log_disk_key", db.log_disk_key),
    }
    stated = changes.get("layout")
    disks = _server_disks(session, db.server)
    db.layout = resolve_layout(disks, **merged, stated=stated if disks or stated else db.layout)
    for field in ("name", "database_disk_key", "log_disk_key"):
        if field in changes:
            setattr(db, field, changes[field])
    record(session, principal.actor, "database.update", "database", db.id, fields=sorted(changes))
    return db


@router.delete("/{server_id}/databases/{database_id}", status_code=204, summary="Forget a database")
def delete_database(server_id: int, database_id: int, session: DbSession, principal=Manager):
    db = _get_database(session, server_id, database_id)
    session.delete(db)
    record(session, principal.actor, "database.delete", "database", database_id, name=db.name)
    return Response(status_code=204)
