"""Storage arrays: test, list volumes, snapshots and capabilities, and which RDM LUN in the
inventory is which array volume (matched by NAA id)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from sqlalchemy import select

from app.adapters import arrays
from app.api import API_PREFIX
from app.api.deps import DbSession, Reader, require
from app.api.problems import Problem, found, invalid
from app.api.schemas.arrays import (
    ArrayCapabilitiesOut,
    ArraySnapshotOut,
    ArrayVolumesOut,
    LunMatchOut,
)
from app.api.schemas.inventory import ConnectionTestOut
from app.audit import record
from app.db.models import ArrayVolume, Connection
from app.db.types import utcnow
from app.domain.connections import ConnectionKind, ConnectionStatus
from app.protection.bindings.arrays import lun_matches, open_driver, store_volumes
from app.security.roles import Permission

router = APIRouter(prefix=API_PREFIX + "/arrays", tags=["arrays"])


def get_array(session, connection_id: int) -> Connection:
    conn = found(session.get(Connection, connection_id), "connection", connection_id)
    if conn.kind != ConnectionKind.ARRAY:
        raise invalid(f"connection '{conn.name}' is a {conn.kind}, not a storage array")
    return conn


def _array_problem(conn: Connection, exc: arrays.ArrayError) -> Problem:
    return Problem(502, f"array '{conn.name}': {exc}", type_="/problems/array")


def test_array(session, conn: Connection, actor) -> ConnectionTestOut:
    """Reach the array, record the outcome on the connection and in the audit log."""
    try:
        message, ok = open_driver(conn).check(), True
    except arrays.ArrayError as exc:
        message, ok = str(exc), False
    conn.status = ConnectionStatus.OK if ok else ConnectionStatus.FAILED
    conn.last_checked_at = utcnow()
    conn.last_error = None if ok else message
    record(
        session,
        actor,
        "connection.test",
        "connection",
        conn.id,
        outcome="success" if ok else "failure",
        message=message,
    )
    return ConnectionTestOut(ok=ok, message=message)


@router.post("/{connection_id}/test", response_model=ConnectionTestOut, summary="Reach the array")
def test(connection_id: int, session: DbSession, principal=require(Permission.MANAGE_CONNECTIONS)):
    return test_array(session, get_array(session, connection_id), principal.actor)


def sync_volumes(session, conn: Connection, actor) -> list[ArrayVolume]:
    """Ask the array for its volumes now and keep the list (for LUN matching)."""
    try:
        volumes = open_driver(conn).list_volumes()
    except arrays.ArrayError as exc:
        conn.status, conn.last_error = ConnectionStatus.FAILED, str(exc)
        record(
            session,
            actor,
            "array.list_volumes",
            "connection",
            conn.id,
            outcome="failure",
            message=str(exc),
        )
        session.commit()
        raise _array_problem(conn, exc) from exc
    rows = store_volumes(session, conn.id, volumes)
    conn.status, conn.last_error, conn.last_synced_at = ConnectionStatus.OK, None, utcnow()
    record(session, actor, "array.list_volumes", "connection", conn.id, volumes=len(rows))
    return rows


@router.post(
    "/{connection_id}/volumes/sync",
    response_model=ArrayVolumesOut,
    summary="List the array's volumes now (and keep the list for LUN matching)",
)
def sync(connection_id: int, session: DbSession, principal=require(Permission.RUN_BACKUP)):
    conn = get_array(session, connection_id)
    rows = sync_volumes(session, conn, principal.actor)
    return {"connection_id": conn.id, "volumes": rows}


@router.get(
    "/{connection_id}/volumes",
    response_model=ArrayVolumesOut,
    summary="The array's volumes as last listed",
)
def volumes(connection_id: int, session: DbSession, _: Reader):
    conn = get_array(session, connection_id)
    rows = session.scalars(
        select(ArrayVolume)
        .where(ArrayVolume.connection_id == conn.id)
        .order_by(ArrayVolume.consistency_group, ArrayVolume.naa_id)
    ).all()
    return {"connection_id": conn.id, "volumes": rows}


@router.get(
    "/{connection_id}/snapshots",
    response_model=list[ArraySnapshotOut],
    summary="Snapshots on the array now, oldest first",
)
def snapshots(connection_id: int, session: DbSession, _: Reader, group: str | None = None):
    conn = get_array(session, connection_id)
    try:
        found = open_driver(conn).list_snapshots(group)
    except arrays.InvalidName as exc:
        raise invalid(str(exc), "group") from exc
    except arrays.ArrayError as exc:
        raise _array_problem(conn, exc) from exc
    return [{**asdict(s), "volumes": list(s.volumes)} for s in found]


@router.get(
    "/{connection_id}/capabilities",
    response_model=ArrayCapabilitiesOut,
    summary="What the array can do and the space it uses",
)
def capabilities(connection_id: int, session: DbSession, _: Reader):
    conn = get_array(session, connection_id)
    try:
        return asdict(open_driver(conn).capabilities())
    except arrays.ArrayError as exc:
        raise _array_problem(conn, exc) from exc


@router.get(
    "/luns",
    response_model=list[LunMatchOut],
    summary="RDM LUNs in the inventory and the array volume each is, matched by NAA id",
)
def luns(session: DbSession, _: Reader, unmatched: bool = False):
    found = lun_matches(session)
    if unmatched:
        found = [m for m in found if not m.matched]
    return [{**asdict(m), "databases": list(m.databases), "matched": m.matched} for m in found]
