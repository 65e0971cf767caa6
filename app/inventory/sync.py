"""Storing a vCenter inventory read, and discovering Exchange servers from custom attributes.

A sync replaces the connection's inventory rows in one transaction, with bulk inserts: readers
see the old estate or the new one, never half of each. Exchange servers and databases refer to
VMs by moref and to disks by device key, so they survive the replacement.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from app.adapters import vsphere
from app.audit import SYSTEM, Actor, record
from app.db.models import (
    Cluster,
    Connection,
    Datacenter,
    Datastore,
    ExchangeDatabase,
    ExchangeServer,
    Host,
    VirtualDisk,
    VirtualMachine,
)
from app.db.types import utcnow
from app.domain import exchange_attribute
from app.domain.protection import LayoutError, layout_from_disks

log = logging.getLogger(__name__)
_BATCH = 1000


@dataclass
class SyncSummary:
    datacenters: int = 0
    clusters: int = 0
    hosts: int = 0
    datastores: int = 0
    vms: int = 0
    disks: int = 0
    servers_discovered: list[str] = field(default_factory=list)
    databases_mapped: int = 0
    problems: list[str] = field(default_factory=list)
    # Snapshots restore points named that vCenter or an array no longer has.
    copies_gone: list[str] = field(default_factory=list)


def _chunks(rows: list[dict], size: int = _BATCH):
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def store_inventory(session: Session, connection_id: int, inv: vsphere.Inventory) -> SyncSummary:
    now = utcnow()
    vm_ids = select(VirtualMachine.id).where(VirtualMachine.connection_id == connection_id)
    session.execute(delete(VirtualDisk).where(VirtualDisk.vm_id.in_(vm_ids)))
    for model in (VirtualMachine, Datastore, Host, Cluster, Datacenter):
        session.execute(delete(model).where(model.connection_id == connection_id))

    base = {"connection_id": connection_id, "synced_at": now}
    simple = [
        (Datacenter, [{**base, "moref": d.moref, "name": d.name} for d in inv.datacenters]),
        (
            Cluster,
            [
                {**base, "moref": c.moref, "name": c.name, "datacenter_moref": c.datacenter}
                for c in inv.clusters
            ],
        ),
        (
            Host,
            [
                {
                    **base,
                    "moref": h.moref,
                    "name": h.name,
                    "cluster_moref": h.cluster,
                    "connection_state": h.connection_state or "",
                }
                for h in inv.hosts
            ],
        ),
        (
            Datastore,
            [
                {
                    **base,
                    "moref": d.moref,
                    "name": d.name,
                    "type": d.type or "",
                    "capacity_bytes": d.capacity_bytes,
                    "free_bytes": d.free_bytes,
                }
                for d in inv.datastores
            ],
        ),
    ]
    for model, rows in simple:
        for chunk in _chunks(rows):
            session.execute(insert(model), chunk)

    summary = SyncSummary(
        len(inv.datacenters), len(inv.clusters), len(inv.hosts), len(inv.datastores), len(inv.vms)
    )
    for vms in (inv.vms[i : i + _BATCH] for i in range(0, len(inv.vms), _BATCH)):
        ids = session.scalars(
            insert(VirtualMachine).returning(VirtualMachine.id, sort_by_parameter_order=True),
            [_vm_row(base, vm) for vm in vms],
        ).all()
        disks = [_disk_row(vm_id, d) for vm_id, vm in zip(ids, vms, strict=True) for d in vm.disks]
        if disks:
            session.execute(insert(VirtualDisk), disks)
        summary.disks += len(disks)
    return summary


def _vm_row(base: dict, vm: vsphere.VirtualMachine) -> dict:
    return {
        **base,
        "moref": vm.moref,
        "name": vm.name,
        "instance_uuid": vm.instance_uuid,
        "host_moref": vm.host,
        "power_state": vm.power_state or "",
        "tools_status": vm.tools_status or "",
        "guest_os": (vm.guest_os or "")[:128],
        "cbt_enabled": bool(vm.cbt_enabled),
        "snapshot_names": list(vm.snapshot_names),
        "custom_attributes": dict(vm.custom_attributes),
    }


def _disk_row(vm_id: int, d: vsphere.VirtualDisk) -> dict:
    return {
        "vm_id": vm_id,
        "device_key": d.key,
        "label": d.label,
        "backing": d.backing,
        "disk_mode": d.disk_mode or "",
        "capacity_bytes": d.capacity_bytes,
        "datastore_moref": d.datastore,
        "file_name": d.file_name or "",
        "lun_uuid": d.lun_uuid,
        "device_name": d.device_name,
    }


def discover_exchange_servers(
    session: Session, connection_id: int, summary: SyncSummary, actor: Actor = SYSTEM
) -> None:
    """Create or update Exchange servers from VMs that carry the ``bulwark.exchange`` attribute.

    Databases named in the attribute are added or re-pointed; databases an operator added by
    hand and the attribute does not name are left alone.
    """
    vms = session.scalars(
        select(VirtualMachine).where(VirtualMachine.connection_id == connection_id)
    ).all()
    tagged = [vm for vm in vms if vm.custom_attributes.get(exchange_attribute.ATTRIBUTE_NAME)]
    if not tagged:
        return
    disks_by_vm: dict[int, dict[int, VirtualDisk]] = {}
    for disk in session.scalars(
        select(VirtualDisk).where(VirtualDisk.vm_id.in_([vm.id for vm in tagged]))
    ):
        disks_by_vm.setdefault(disk.vm_id, {})[disk.device_key] = disk
    servers = {
        s.vm_moref: s
        for s in session.scalars(
            select(ExchangeServer).where(ExchangeServer.connection_id == connection_id)
        )
    }
    names_taken = set(session.scalars(select(ExchangeServer.name)))
    for vm in tagged:
        try:
            placements = exchange_attribute.parse(
                vm.custom_attributes[exchange_attribute.ATTRIBUTE_NAME]
            )
        except exchange_attribute.PlacementError as exc:
            summary.problems.append(f"{vm.name}: {exc}")
            continue
        server = servers.get(vm.moref)
        if server is None:
            if vm.name in names_taken:
                summary.problems.append(
                    f"{vm.name}: an Exchange server of that name already exists for another VM"
                )
                continue
            server = ExchangeServer(
                name=vm.name,
                connection_id=connection_id,
                vm_moref=vm.moref,
                description="discovered from the bulwark.exchange attribute",
            )
            session.add(server)
            session.flush()
            names_taken.add(vm.name)
            summary.servers_discovered.append(vm.name)
            record(session, actor, "server.discover", "server", server.id, name=vm.name)
        disks = disks_by_vm.get(vm.id, {})
        existing = {db.name: db for db in server.databases}
        for p in placements:
            try:
                layout = layout_from_disks(disks, p.database_disk_key, p.log_disk_key)
            except LayoutError as exc:
                summary.problems.append(f"{vm.name}/{p.name}: {exc}")
                continue
            db = existing.get(p.name)
            if db is None:
                server.databases.append(
                    ExchangeDatabase(
                        name=p.name,
                        database_disk_key=p.database_disk_key,
                        log_disk_key=p.log_disk_key,
                        layout=layout,
                    )
                )
            else:
                db.database_disk_key, db.log_disk_key, db.layout = (
                    p.database_disk_key,
                    p.log_disk_key,
                    layout,
                )
            summary.databases_mapped += 1
    for problem in summary.problems:
        log.warning("exchange discovery: %s", problem)


def sync_connection(
    session: Session, connection_id: int, inventory: vsphere.Inventory, actor: Actor = SYSTEM
) -> SyncSummary:
    """Store a fresh inventory read and discover Exchange servers from it."""
    summary = store_inventory(session, connection_id, inventory)
    session.get(Connection, connection_id).last_synced_at = utcnow()
    session.flush()
    discover_exchange_servers(session, connection_id, summary, actor)
    # The catalog is checked against the same read (imported here: protection builds on
    # the inventory, not the other way round).
    from app.protection.catalog import reconcile

    summary.copies_gone = reconcile.vm_snapshots(session, connection_id, inventory)
    found, problems = reconcile.array_snapshots(session)
    summary.copies_gone += found
    summary.problems += problems
    record(
        session,
        actor,
        "inventory.sync",
        "connection",
        connection_id,
        vms=summary.vms,
        disks=summary.disks,
        discovered=summary.servers_discovered,
        copies_gone=len(summary.copies_gone),
    )
    return summary
