"""The vSphere inventory as last synchronised (read from the database, not from vCenter)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from app.api import API_PREFIX
from app.api.deps import DbSession, Reader
from app.api.pagination import Page, PageWindow, paginate
from app.api.problems import found
from app.api.schemas.inventory import DatastoreOut, HostOut, VmOut
from app.db.models import Datastore, ExchangeServer, Host, VirtualDisk, VirtualMachine

router = APIRouter(prefix=API_PREFIX + "/inventory", tags=["inventory"])


@router.get("/vms", response_model=Page[VmOut], summary="List virtual machines with their disks")
def list_vms(
    session: DbSession,
    _: Reader,
    connection_id: int | None = None,
    q: str | None = Query(default=None, max_length=64, description="Name contains"),
    power_state: str | None = Query(default=None, max_length=32),
    backing: str | None = Query(
        default=None, description="Has a disk with this backing: flat, rdm-physical, rdm-virtual"
    ),
    exchange: bool | None = Query(default=None, description="Is (not) an Exchange server"),
    sort: str | None = Query(default=None, description="name, power_state"),
    window: PageWindow = Depends(),
):
    query = select(VirtualMachine).options(selectinload(VirtualMachine.disks))
    if connection_id is not None:
        query = query.where(VirtualMachine.connection_id == connection_id)
    if q:
        # Case-insensitive on both databases (LIKE is not on PostgreSQL).
        query = query.where(func.lower(VirtualMachine.name).contains(q.lower(), autoescape=True))
    if power_state:
        query = query.where(VirtualMachine.power_state == power_state)
    if backing:
        query = query.where(VirtualMachine.disks.any(VirtualDisk.backing == backing))
    if exchange is not None:
        is_exchange = (
            select(ExchangeServer.id)
            .where(
                ExchangeServer.connection_id == VirtualMachine.connection_id,
                ExchangeServer.vm_moref == VirtualMachine.moref,
            )
            .exists()
        )
        query = query.where(is_exchange if exchange else ~is_exchange)
    return paginate(
        session,
        query,
        window,
        sort,
        sortable={"name": VirtualMachine.name, "power_state": VirtualMachine.power_state},
        default_sort="name",
    )


@router.get("/vms/{vm_id}", response_model=VmOut, summary="Read a virtual machine")
def read_vm(vm_id: int, session: DbSession, _: Reader):
    return found(session.get(VirtualMachine, vm_id), "virtual machine", vm_id)


@router.get("/datastores", response_model=Page[DatastoreOut], summary="List datastores")
def list_datastores(
    session: DbSession,
    _: Reader,
    connection_id: int | None = None,
    sort: str | None = Query(default=None, description="name, free_bytes, capacity_bytes"),
    window: PageWindow = Depends(),
):
    query = select(Datastore)
    if connection_id is not None:
        query = query.where(Datastore.connection_id == connection_id)
    return paginate(
        session,
        query,
        window,
        sort,
        sortable={
            "name": Datastore.name,
            "free_bytes": Datastore.free_bytes,
            "capacity_bytes": Datastore.capacity_bytes,
        },
        default_sort="name",
    )


@router.get("/hosts", response_model=Page[HostOut], summary="List ESXi hosts")
def list_hosts(
    session: DbSession,
    _: Reader,
    connection_id: int | None = None,
    window: PageWindow = Depends(),
):
    query = select(Host)
    if connection_id is not None:
        query = query.where(Host.connection_id == connection_id)
    return paginate(session, query, window, None, sortable={"name": Host.name}, default_sort="name")
