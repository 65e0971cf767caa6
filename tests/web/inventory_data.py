"""An inventory as a sync would have stored it, written with the service's models."""

from __future__ import annotations

from sqlalchemy import insert

from app.db.models import Connection, Datastore, VirtualDisk, VirtualMachine
from app.db.types import utcnow
from app.domain.connections import ConnectionKind, ConnectionStatus

NAA_P = "naa.6001405aaaaaaaaaaaaaaaaaaaaaaaaa"
NAA_V = "naa.6001405bbbbbbbbbbbbbbbbbbbbbbbbb"


def add_vcenter(session, name: str = "vc-lab") -> Connection:
    vc = Connection(name=name, kind=ConnectionKind.VCENTER, status=ConnectionStatus.OK)
    session.add(vc)
    session.flush()
    session.add_all(
        [
            Datastore(connection_id=vc.id, moref="datastore-1", name="VMFS-EXCH-DB-01"),
            Datastore(connection_id=vc.id, moref="datastore-2", name="VMFS-SYS-01"),
        ]
    )
    return vc


def add_exchange_vm(session, connection_id: int, name: str = "EXCH-MBX07") -> VirtualMachine:
    """A VM with a system disk and one disk of each backing, plus a log VMDK."""
    vm = VirtualMachine(
        connection_id=connection_id,
        moref=f"vm-{name.lower()}",
        name=name,
        power_state="poweredOn",
        tools_status="toolsOk",
        guest_os="Microsoft Windows Server 2019 (64-bit)",
    )
    vm.disks = [
        VirtualDisk(
            device_key=2000,
            label="Hard disk 1",
            backing="flat",
            capacity_bytes=80 << 30,
            datastore_moref="datastore-2",
            file_name=f"[VMFS-SYS-01] {name}/{name}.vmdk",
        ),
        VirtualDisk(
            device_key=2016,
            label="Hard disk 2",
            backing="flat",
            capacity_bytes=200 << 30,
            datastore_moref="datastore-1",
            file_name=f"[VMFS-EXCH-DB-01] {name}/{name}_1.vmdk",
        ),
        VirtualDisk(
            device_key=2017,
            label="Hard disk 3",
            backing="rdm-physical",
            disk_mode="independent_persistent",
            capacity_bytes=500 << 30,
            datastore_moref="datastore-2",
            lun_uuid="0200000000" + NAA_P[4:],
            device_name=f"/vmfs/devices/disks/{NAA_P}",
        ),
        VirtualDisk(
            device_key=2018,
            label="Hard disk 4",
            backing="rdm-virtual",
            capacity_bytes=300 << 30,
            datastore_moref="datastore-2",
            lun_uuid="0200000000" + NAA_V[4:],
            device_name=f"/vmfs/devices/disks/{NAA_V}",
        ),
        VirtualDisk(
            device_key=2032,
            label="Hard disk 5",
            backing="flat",
            capacity_bytes=50 << 30,
            datastore_moref="datastore-1",
        ),
    ]
    session.add(vm)
    session.flush()
    return vm


def add_many_vms(session, connection_id: int, count: int, start: int = 0) -> None:
    """Ordinary VMs in bulk: every 3rd with a second disk, every 10th powered off."""
    now = utcnow()
    rows = [
        {
            "connection_id": connection_id,
            "moref": f"vm-{i}",
            "name": f"WEB-{i:05d}",
            "power_state": "poweredOff" if i % 10 == 0 else "poweredOn",
            "tools_status": "toolsOk",
            "guest_os": "Ubuntu Linux (64-bit)",
            "cbt_enabled": False,
            "snapshot_names": [],
            "custom_attributes": {},
            "synced_at": now,
        }
        for i in range(start, start + count)
    ]
    ids = session.scalars(
        insert(VirtualMachine).returning(VirtualMachine.id, sort_by_parameter_order=True), rows
    ).all()
    disks = []
    for n, vm_id in enumerate(ids):
        disks.append(
            {
                "vm_id": vm_id,
                "device_key": 2000,
                "label": "Hard disk 1",
                "backing": "flat",
                "capacity_bytes": 40 << 30,
                "datastore_moref": "datastore-2",
            }
        )
        if n % 3 == 0:
            disks.append(
                {
                    "vm_id": vm_id,
                    "device_key": 2001,
                    "label": "Hard disk 2",
                    "backing": "flat",
                    "capacity_bytes": 10 << 30,
                    "datastore_moref": "datastore-1",
                }
            )
    session.execute(insert(VirtualDisk), disks)
