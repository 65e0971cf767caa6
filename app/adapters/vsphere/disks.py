"""Virtual disks of a VM, and how their backing tells the database layout.

One place turns the facts vCenter reports about a disk into a :class:`VirtualDisk`, whether the
facts came from pyVmomi objects or from the lean page reader, so both give identical records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

# Disk backing kinds, in the words the rest of Bulwark uses for database layouts.
FLAT = "flat"  # a VMDK on a VMFS/NFS datastore
RDM_PHYSICAL = "rdm-physical"  # raw device mapping, physical compatibility mode
RDM_VIRTUAL = "rdm-virtual"  # raw device mapping, virtual compatibility mode
OTHER = "other"  # sparse, SE sparse, vVol ... (not expected on Exchange servers)


@dataclass(frozen=True, slots=True)
class VirtualDisk:
    key: int  # device key, stable for the life of the disk
    label: str  # "Hard disk 2"
    capacity_bytes: int
    backing: str  # FLAT, RDM_PHYSICAL, RDM_VIRTUAL or OTHER
    disk_mode: str | None  # persistent, independent_persistent, independent_nonpersistent ...
    datastore: str | None  # moref of the datastore holding the VMDK or the RDM mapping file
    file_name: str | None  # "[datastore] folder/file.vmdk"
    controller: str | None  # "SCSI(1:0)"
    controller_key: int | None
    unit_number: int | None
    disk_uuid: str | None
    lun_uuid: str | None  # RDMs only
    device_name: str | None  # RDMs only: /vmfs/devices/disks/naa....

    @property
    def is_rdm(self) -> bool:
        return self.backing in (RDM_PHYSICAL, RDM_VIRTUAL)

    @property
    def lun_canonical_name(self) -> str | None:
        """The LUN's canonical name (``naa.6...``) of an RDM, from its device name."""
        if not self.device_name:
            return None
        return self.device_name.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class DiskFacts:
    """What vCenter says about one disk, before interpretation."""

    key: int
    label: str | None
    capacity_bytes: int | None
    capacity_kb: int | None
    controller_key: int | None
    unit_number: int | None
    backing_class: type | None
    disk_mode: str | None
    datastore: str | None  # moref
    file_name: str | None
    disk_uuid: str | None
    lun_uuid: str | None
    device_name: str | None
    compatibility_mode: str | None


def controller_kind(cls: type) -> str | None:
    """ "SCSI", "IDE", "SATA" or "NVME" for a disk controller class, None for other devices."""
    device = vim.vm.device
    for base, kind in (
        (device.VirtualSCSIController, "SCSI"),
        (device.VirtualIDEController, "IDE"),
        (device.VirtualSATAController, "SATA"),
        (device.VirtualNVMEController, "NVME"),
    ):
        if issubclass(cls, base):
            return kind
    return None


def backing_kind(backing_class: type | None, compatibility_mode: str | None) -> str:
    if backing_class is None:
        return OTHER
    if issubclass(backing_class, vim.vm.device.VirtualDisk.FlatVer2BackingInfo):
        return FLAT
    if issubclass(backing_class, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo):
        return RDM_PHYSICAL if compatibility_mode == "physicalMode" else RDM_VIRTUAL
    return OTHER


def make_disk(facts: DiskFacts, controllers: dict[int, tuple[str, int]]) -> VirtualDisk:
    """A :class:`VirtualDisk` from its facts; ``controllers`` maps keys to (kind, bus)."""
    kind = backing_kind(facts.backing_class, facts.compatibility_mode)
    controller = controllers.get(facts.controller_key) if facts.controller_key is not None else None
    unit = facts.unit_number
    rdm = kind in (RDM_PHYSICAL, RDM_VIRTUAL)
    return VirtualDisk(
        key=facts.key,
        label=facts.label or f"disk {facts.key}",
        capacity_bytes=facts.capacity_bytes or (facts.capacity_kb or 0) * 1024,
        backing=kind,
        disk_mode=facts.disk_mode or None,
        datastore=facts.datastore or None,
        file_name=facts.file_name or None,
        controller=f"{controller[0]}({controller[1]}:{unit})"
        if controller and unit is not None
        else None,
        controller_key=facts.controller_key,
        unit_number=unit,
        disk_uuid=facts.disk_uuid or None,
        lun_uuid=(facts.lun_uuid or None) if rdm else None,
        device_name=(facts.device_name or None) if rdm else None,
    )


def disks_of(devices: Any) -> tuple[VirtualDisk, ...]:
    """The virtual disks in a pyVmomi ``config.hardware.device`` list."""
    controllers: dict[int, tuple[str, int]] = {}
    for d in devices or []:
        kind = controller_kind(type(d))
        if kind is not None and d.busNumber is not None:
            controllers[int(d.key)] = (kind, int(d.busNumber))
    disks = []
    for d in devices or []:
        if not isinstance(d, vim.vm.device.VirtualDisk):
            continue
        b = d.backing
        datastore = getattr(b, "datastore", None)
        disks.append(
            make_disk(
                DiskFacts(
                    key=int(d.key),
                    label=str(d.deviceInfo.label) if d.deviceInfo else None,
                    capacity_bytes=d.capacityInBytes,
                    capacity_kb=d.capacityInKB,
                    controller_key=d.controllerKey,
                    unit_number=d.unitNumber,
                    backing_class=type(b) if b is not None else None,
                    disk_mode=getattr(b, "diskMode", None),
                    datastore=datastore._moId if datastore is not None else None,
                    file_name=getattr(b, "fileName", None),
                    disk_uuid=getattr(b, "uuid", None),
                    lun_uuid=getattr(b, "lunUuid", None),
                    device_name=getattr(b, "deviceName", None),
                    compatibility_mode=getattr(b, "compatibilityMode", None),
                ),
                controllers,
            )
        )
    return tuple(disks)
