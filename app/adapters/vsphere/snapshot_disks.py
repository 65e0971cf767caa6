"""The disks a VM snapshot froze, where their bytes are, and what changed since an earlier
snapshot (changed block tracking, ``QueryChangedDiskAreas``).

After ``CreateSnapshot_Task`` vSphere redirects the VM's writes to new delta files; the
snapshot's own configuration (``snapshot.config``) still names the files it froze. For a disk
with no older snapshot, that is the base disk: ``NAME.vmdk`` whose bytes are in
``NAME-flat.vmdk`` (a virtual-mode RDM: ``NAME-rdm.vmdk``, which reads through to the LUN).
Independent disks and physical-mode RDMs are not in a VMFS snapshot at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from ._collector import retrieve_one, translated_faults
from .datastore_files import DatastorePath, flat_extent, rdm_extent
from .disks import FLAT, OTHER, RDM_PHYSICAL, RDM_VIRTUAL, VirtualDisk, disks_of
from .errors import VSphereError
from .tasks import wait_for_task


class ChangedBlocksUnavailable(VSphereError):
    """vCenter cannot say what changed (CBT off, reset, unknown change id, not implemented)."""


@dataclass(frozen=True)
class SnapshotDisk:
    key: int
    label: str
    backing: str  # FLAT, RDM_VIRTUAL, RDM_PHYSICAL, OTHER
    disk_mode: str
    capacity_bytes: int
    descriptor: DatastorePath
    change_id: str | None  # the CBT change id of this disk at the snapshot ("*" never)
    chained: bool  # the frozen file is itself a delta of an older snapshot
    in_snapshot: bool  # False: independent disk or physical-mode RDM (not frozen)

    @property
    def data_file(self) -> DatastorePath:
        """The file holding the disk's bytes, as the snapshot froze them."""
        if self.backing == RDM_VIRTUAL:
            return rdm_extent(self.descriptor)
        return flat_extent(self.descriptor)


def _backing_kind(backing: Any) -> str:
    if isinstance(backing, vim.vm.device.VirtualDisk.FlatVer2BackingInfo):
        return FLAT
    if isinstance(backing, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo):
        return RDM_PHYSICAL if backing.compatibilityMode == "physicalMode" else RDM_VIRTUAL
    return OTHER


def vm_disks(client: Any, vm_moref: str) -> tuple[VirtualDisk, ...]:
    """The VM's virtual disks as they are now (one property read)."""
    vm = client.managed_object(vim.VirtualMachine, vm_moref)
    with translated_faults(client, f"reading the disks of {vm_moref}"):
        devices = retrieve_one(client, vm, vim.VirtualMachine, ["config.hardware.device"]).get(
            "config.hardware.device", []
        )
    return disks_of(devices)


def snapshot_disks(client: Any, snapshot_moref: str) -> list[SnapshotDisk]:
    """The virtual disks of a snapshot's configuration, in device-key order."""
    snap = client.managed_object(vim.vm.Snapshot, snapshot_moref)
    with translated_faults(client, f"reading the disks of snapshot {snapshot_moref}"):
        devices = retrieve_one(client, snap, vim.vm.Snapshot, ["config.hardware.device"]).get(
            "config.hardware.device", []
        )
    found = []
    for dev in devices:
        if not isinstance(dev, vim.vm.device.VirtualDisk):
            continue
        backing = dev.backing
        kind = _backing_kind(backing)
        mode = str(getattr(backing, "diskMode", "") or "")
        capacity = int(dev.capacityInBytes or (dev.capacityInKB or 0) * 1024)
        found.append(
            SnapshotDisk(
                key=int(dev.key),
                label=str(dev.deviceInfo.label) if dev.deviceInfo else f"disk {dev.key}",
                backing=kind,
                disk_mode=mode,
                capacity_bytes=capacity,
                descriptor=DatastorePath.parse(backing.fileName),
                change_id=str(backing.changeId) if getattr(backing, "changeId", None) else None,
                chained=getattr(backing, "parent", None) is not None,
                in_snapshot=kind in (FLAT, RDM_VIRTUAL) and not mode.startswith("independent"),
            )
        )
    return sorted(found, key=lambda d: d.key)


def changed_areas(
    client: Any,
    vm_moref: str,
    snapshot_moref: str,
    disk_key: int,
    size: int,
    change_id: str,
) -> list[tuple[int, int]]:
    """``(offset, length)`` areas of the disk written between ``change_id`` and the snapshot.

    Raises :class:`ChangedBlocksUnavailable` when vCenter cannot answer (tracking off or reset,
    an unknown change id, a server without CBT).
    """
    vm = client.managed_object(vim.VirtualMachine, vm_moref)
    snap = client.managed_object(vim.vm.Snapshot, snapshot_moref)
    areas: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        try:
            info = vm.QueryChangedDiskAreas(
                snapshot=snap, deviceKey=disk_key, startOffset=offset, changeId=change_id
            )
        except (vmodl.fault.MethodNotFound, vmodl.fault.NotSupported) as exc:
            raise ChangedBlocksUnavailable(
                f"vCenter does not offer changed block tracking here ({exc.msg or 'not supported'})"
            ) from None
        except vmodl.MethodFault as exc:
            raise ChangedBlocksUnavailable(
                f"vCenter could not say what changed on disk {disk_key} since change id "
                f"{change_id}: {exc.msg or type(exc).__name__}"
            ) from None
        areas.extend((int(a.start), int(a.length)) for a in info.changedArea or [])
        step = int(info.startOffset) + int(info.length)
        if step <= offset:  # a server that does not move forward: stop rather than loop
            break
        offset = step
    return areas


RESET_TIMEOUT = 300.0
"""Seconds to wait for each of the two reconfigurations of a CBT reset."""


def reset_change_tracking(client: Any, vm_moref: str, *, timeout: float = RESET_TIMEOUT) -> None:
    """Reset changed block tracking on a VM: turn it off, then on again (two ReconfigVM_Task).

    vCenter drops the VM's change ids when tracking goes off; the new tracking starts at the
    VM's next stun, so only change ids from snapshots taken after this are to be trusted.
    """
    vm = client.managed_object(vim.VirtualMachine, vm_moref)
    for enabled in (False, True):
        spec = vim.vm.ConfigSpec(changeTrackingEnabled=enabled)
        state = "on" if enabled else "off"
        with translated_faults(client, f"turning changed block tracking {state} on {vm_moref}"):
            task = vm.ReconfigVM_Task(spec=spec)
        wait_for_task(
            client,
            task,
            timeout,
            description=f"turning changed block tracking {state} on {vm_moref}",
        )
