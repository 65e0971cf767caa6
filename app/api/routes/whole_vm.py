"""Whole-VM restores of a VM-image restore point: what its copies allow, the configuration it
captured (and how the VM differs from it now), and restoring the VM as a new VM or over the
original."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field

from app.adapters import vsphere
from app.api import API_PREFIX
from app.api.deps import DbSession, Reader, require, runtime
from app.api.problems import Problem, invalid, not_found
from app.api.schemas.common import Input
from app.api.schemas.jobs import JobOut
from app.db.models import Connection, ExchangeServer, RestorePoint
from app.domain.protection import RestoreRefused
from app.inventory import vcenter
from app.protection.restores import whole_vm as restore_whole_vm
from app.security.roles import Permission

router = APIRouter(prefix=API_PREFIX + "/restore-points", tags=["restore points"])
Name = Annotated[str, Field(min_length=1, max_length=200)]


class WholeVmRestore(Input):
    target: Literal["new", "original"] = Field(
        default="new",
        description="new: a new VM from the captured configuration; original: every disk over "
        "the VM's own (powered off first, confirm required)",
    )
    new_vm_name: Annotated[str, Field(min_length=1, max_length=80)] | None = None
    folder: Name | None = Field(default=None, description="VM folder (default: the original's)")
    host: Name | None = Field(default=None, description="Host (default: the original's)")
    cluster: Name | None = Field(default=None, description="Cluster, instead of a host")
    datastore: Name | None = Field(default=None, description="Default: the original's")
    network: Name | None = Field(default=None, description="Default: the original's")
    connect_network: bool = Field(
        default=False, description="Connect the NICs at power-on (default: disconnected)"
    )
    power_on: bool = False
    confirm: Annotated[str, Field(max_length=128)] | None = Field(
        default=None, description="The server's name, to restore over the original"
    )


def _point(session, point_id: int) -> RestorePoint:
    point = session.get(RestorePoint, point_id)
    if point is None:
        raise not_found("restore point", point_id)
    return point


@router.get("/{point_id}/restores", summary="The restores this point's live copies allow")
def list_offers(point_id: int, session: DbSession, _: Reader) -> list[dict[str, Any]]:
    point = _point(session, point_id)
    return [
        {"key": o.key, "label": o.label, "available": o.available, "reason": o.reason or None}
        for o in restore_whole_vm.offers(point)
    ]


@router.get(
    "/{point_id}/vm-config",
    summary="The VM configuration captured with the point; with compare=true, how the VM "
    "differs from it now (read from vCenter)",
)
def read_vm_config(
    point_id: int, session: DbSession, request: Request, _: Reader, compare: bool = False
) -> dict[str, Any]:
    point = _point(session, point_id)
    config = (point.details or {}).get("vm_config")
    if not config:
        raise not_found("VM configuration of restore point", point_id)
    out: dict[str, Any] = {"config": config}
    if compare:
        out["differences"] = live_differences(session, request, point)
    return out


def live_differences(session: Any, request: Request, point: RestorePoint) -> list[dict]:
    server = session.get(ExchangeServer, point.server_id) if point.server_id else None
    conn = session.get(Connection, server.connection_id) if server else None
    if server is None or conn is None or server.vm_moref is None:
        raise invalid(f"restore point {point.id}'s server has no VM to compare with", None)
    try:
        with vcenter.open_client(conn, runtime(request).secrets) as client:
            return restore_whole_vm.current_differences(
                client, point.details["vm_config"], server.vm_moref
            )
    except vsphere.VSphereError as exc:
        raise Problem(502, f"vCenter '{conn.name}': {exc}", type_="/problems/vcenter") from exc


@router.post(
    "/{point_id}/whole-vm",
    response_model=JobOut,
    status_code=202,
    summary="Restore the whole VM from the repository, as a new VM or over the original",
)
def restore_whole(
    point_id: int,
    body: WholeVmRestore,
    session: DbSession,
    principal=require(Permission.RUN_RESTORE),
):
    point = _point(session, point_id)
    try:
        return restore_whole_vm.queue(
            session, point, body.model_dump(exclude_none=True), principal.actor
        )
    except RestoreRefused as exc:
        field = "confirm" if "confirm" in str(exc) else None
        raise invalid(str(exc), field) from None
