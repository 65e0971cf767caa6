"""Arrays as Bulwark knows them: their volumes as last listed, which RDM LUN of which
Exchange database is which array volume (by NAA id), and opening an array connection's
driver. Shared by the array-snapshot backup, array restores, the API and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.adapters import arrays
from app.db.models import (
    ArrayVolume,
    Connection,
    ExchangeDatabase,
    ExchangeServer,
    VirtualDisk,
    VirtualMachine,
)
from app.db.types import utcnow
from app.domain.connections import ConnectionKind
from app.inventory.queries import server_vm

RDM_BACKINGS = ("rdm-physical", "rdm-virtual")


def open_driver(conn: Connection) -> arrays.ArrayDriver:
    if conn.kind != ConnectionKind.ARRAY:
        raise arrays.ArrayUnavailable(f"connection '{conn.name}' is a {conn.kind}, not an array")
    return arrays.open_array(conn.options or {}, conn.name)


def store_volumes(
    session: Session, connection_id: int, volumes: list[arrays.Volume]
) -> list[ArrayVolume]:
    """Replace the stored volume list of one array with what it just reported."""
    now = utcnow()
    session.execute(delete(ArrayVolume).where(ArrayVolume.connection_id == connection_id))
    rows = [
        ArrayVolume(
            connection_id=connection_id,
            naa_id=v.naa_id,
            consistency_group=v.group,
            size_bytes=v.size_bytes,
            used_bytes=v.used_bytes,
            clone_of=v.clone_of,
            synced_at=now,
        )
        for v in volumes
    ]
    session.add_all(rows)
    session.flush()
    return rows


@dataclass(frozen=True)
class LunMatch:
    """One RDM disk of a VM in the inventory and the array volume behind it, if known."""

    vm_name: str
    vm_moref: str
    connection_id: int  # the vCenter
    device_key: int
    label: str
    backing: str
    capacity_bytes: int
    naa_id: str | None
    server: str | None
    databases: tuple[str, ...]
    role: str | None  # "database", "logs" or None
    array_connection_id: int | None
    array_name: str | None
    consistency_group: str | None

    @property
    def matched(self) -> bool:
        return self.array_connection_id is not None


def lun_matches(session: Session) -> list[LunMatch]:
    """Every RDM disk in the inventory, matched to array volumes by NAA id (three queries)."""
    disks = session.execute(
        select(VirtualDisk, VirtualMachine)
        .join(VirtualMachine, VirtualDisk.vm_id == VirtualMachine.id)
        .where(VirtualDisk.backing.in_(RDM_BACKINGS))
        .order_by(VirtualMachine.name, VirtualDisk.device_key)
    ).all()
    volumes: dict[str, tuple[ArrayVolume, str]] = {}
    for vol, name in session.execute(
        select(ArrayVolume, Connection.name).join(
            Connection, ArrayVolume.connection_id == Connection.id
        )
    ):
        volumes.setdefault(vol.naa_id, (vol, name))
    uses: dict[tuple[int, str, int], list[tuple[str, str, str]]] = {}
    for db, server in session.execute(
        select(ExchangeDatabase, ExchangeServer).join(
            ExchangeServer, ExchangeDatabase.server_id == ExchangeServer.id
        )
    ):
        for key, role in ((db.database_disk_key, "database"), (db.log_disk_key, "logs")):
            if key is not None and server.connection_id and server.vm_moref:
                uses.setdefault((server.connection_id, server.vm_moref, key), []).append(
                    (server.name, db.name, role)
                )
    out = []
    for disk, vm in disks:
        naa = arrays.naa_of_lun(disk.device_name, disk.lun_uuid)
        found = volumes.get(naa) if naa else None
        used = uses.get((vm.connection_id, vm.moref, disk.device_key), [])
        out.append(
            LunMatch(
                vm_name=vm.name,
                vm_moref=vm.moref,
                connection_id=vm.connection_id,
                device_key=disk.device_key,
                label=disk.label,
                backing=disk.backing,
                capacity_bytes=disk.capacity_bytes,
                naa_id=naa,
                server=used[0][0] if used else None,
                databases=tuple(sorted({u[1] for u in used})),
                role=used[0][2] if used else None,
                array_connection_id=found[0].connection_id if found else None,
                array_name=found[1] if found else None,
                consistency_group=found[0].consistency_group if found else None,
            )
        )
    return out


@dataclass(frozen=True)
class DatabaseVolumes:
    """Where one database's LUNs live on an array."""

    array_connection_id: int
    array_name: str
    naa_ids: dict[str, str]  # role ("database", "logs") -> NAA id
    consistency_group: str

    @property
    def all(self) -> list[str]:
        return sorted(set(self.naa_ids.values()))


class VolumesNotFound(arrays.ArrayError):
    pass


def database_volumes(
    session: Session, server: ExchangeServer, database: ExchangeDatabase
) -> DatabaseVolumes:
    """The array volumes behind a database's RDM LUNs (database and logs), or an error that
    says which LUN is on no known array."""
    vm = server_vm(session, server)
    if vm is None:
        raise VolumesNotFound(f"{server.name}'s VM is not in the inventory; sync the vCenter")
    disks = {d.device_key: d for d in vm.disks}
    naa_ids: dict[str, str] = {}
    for role, key in (("database", database.database_disk_key), ("logs", database.log_disk_key)):
        if key is None:
            continue
        disk = disks.get(key)
        naa = arrays.naa_of_lun(disk.device_name, disk.lun_uuid) if disk else None
        if naa is None:
            raise VolumesNotFound(
                f"the {role} disk {key} of {server.name}/{database.name} is not an RDM LUN "
                "with an NAA id"
            )
        naa_ids[role] = naa
    rows = session.scalars(select(ArrayVolume).where(ArrayVolume.naa_id.in_(naa_ids.values())))
    found = {r.naa_id: r for r in rows}
    for role, naa in naa_ids.items():
        if naa not in found:
            raise VolumesNotFound(
                f"the {role} LUN {naa} of {server.name}/{database.name} is on no array Bulwark "
                "knows: add the array as a connection and list its volumes"
            )
    conns = {found[n].connection_id for n in naa_ids.values()}
    groups = {found[n].consistency_group for n in naa_ids.values()}
    if len(conns) != 1 or len(groups) != 1:
        raise VolumesNotFound(
            f"the LUNs of {server.name}/{database.name} are not in one consistency group on "
            "one array; an array snapshot could not capture database and logs together"
        )
    conn_id = conns.pop()
    conn = session.get(Connection, conn_id)
    return DatabaseVolumes(conn_id, conn.name if conn else str(conn_id), naa_ids, groups.pop())
