"""VM snapshots: take, list, revert to, remove.

A VMFS snapshot captures the VM's VMDKs and virtual-mode RDMs; physical-mode RDM disks are
never in it (ESXi cannot snapshot them: that is the array's job). Snapshots are for the short
window of a backup or for instant recovery; keep only a few.

Blocking calls; asyncio callers run them in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyVmomi import vim

from ._collector import moref_of, retrieve_one, translated_faults
from .tasks import CancelCheck, ProgressCallback, wait_for_task

DEFAULT_TIMEOUT = 1800.0
"""Seconds to wait for a snapshot task (removal consolidates disks and can take long)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One snapshot of a VM, as listed in its snapshot tree."""

    moref: str
    name: str
    description: str
    created: datetime | None
    vm_power_state: str  # power state of the VM when the snapshot was taken
    quiesced: bool
    is_current: bool
    parent: str | None  # moref of the parent snapshot, None for a root
    id: int


def flatten_tree(tree: Any, current: str | None, parent: str | None = None) -> list[Snapshot]:
    """Snapshots of a ``rootSnapshotList`` (or child list), parents before children."""
    out: list[Snapshot] = []
    for node in tree or []:
        moref = moref_of(node.snapshot) or ""
        out.append(
            Snapshot(
                moref=moref,
                name=str(node.name),
                description=str(node.description or ""),
                created=node.createTime,
                vm_power_state=str(node.state),
                quiesced=bool(node.quiesced),
                is_current=moref == current,
                parent=parent,
                id=int(node.id),
            )
        )
        out.extend(flatten_tree(node.childSnapshotList, current, moref))
    return out


def list_snapshots(client: Any, vm: Any) -> list[Snapshot]:
    """All snapshots of ``vm`` (moref "vm-42" or pyVmomi object), parents before children."""
    vm_obj = client.managed_object(vim.VirtualMachine, vm)
    with translated_faults(client, f"listing snapshots of {vm_obj._moId}"):
        info = retrieve_one(client, vm_obj, vim.VirtualMachine, ["snapshot"]).get("snapshot")
    if info is None:
        return []
    return flatten_tree(info.rootSnapshotList, moref_of(info.currentSnapshot))


def create_snapshot(
    client: Any,
    vm_moref: Any,
    name: str,
    description: str = "",
    memory: bool = False,
    quiesce: bool = False,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    on_progress: ProgressCallback | None = None,
    cancel_check: CancelCheck | None = None,
) -> str:
    """Take a snapshot of the VM and return the snapshot's moref ("snapshot-12").

    ``memory`` also saves the running memory; ``quiesce`` asks VMware Tools in the guest to
    quiesce file systems (and, with VSS, applications) first.
    """
    vm_obj = client.managed_object(vim.VirtualMachine, vm_moref)
    what = f"snapshot {name!r} of {vm_obj._moId}"
    with translated_faults(client, what):
        task = vm_obj.CreateSnapshot_Task(
            name=name, description=description, memory=memory, quiesce=quiesce
        )
    result = wait_for_task(
        client, task, timeout, on_progress, cancel_check, description=f"taking {what}"
    )
    return moref_of(result) or ""


def remove_snapshot(
    client: Any,
    snapshot_moref: Any,
    *,
    remove_children: bool = False,
    consolidate: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    on_progress: ProgressCallback | None = None,
) -> None:
    """Delete a snapshot, merging its changes into the parent (children stay unless asked)."""
    snap = client.managed_object(vim.vm.Snapshot, snapshot_moref)
    what = f"removing snapshot {snap._moId}"
    with translated_faults(client, what):
        task = snap.RemoveSnapshot_Task(removeChildren=remove_children, consolidate=consolidate)
    wait_for_task(client, task, timeout, on_progress, description=what)


def revert_snapshot(
    client: Any,
    snapshot_moref: Any,
    *,
    suppress_power_on: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    on_progress: ProgressCallback | None = None,
) -> None:
    """Return the VM to the state of a snapshot (its current state is discarded)."""
    snap = client.managed_object(vim.vm.Snapshot, snapshot_moref)
    what = f"reverting to snapshot {snap._moId}"
    with translated_faults(client, what):
        task = snap.RevertToSnapshot_Task(suppressPowerOn=suppress_power_on)
    wait_for_task(client, task, timeout, on_progress, description=what)
