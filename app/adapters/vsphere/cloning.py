"""Clone a VM from one of its snapshots: "revert to a new VM", which leaves the VM itself alone.

``CloneVM_Task`` with ``spec.snapshot`` set builds the clone from the VM as it was in that
snapshot. The clone goes beside the source (same folder, resource pool and host), powered off
unless asked, and carries an ``extraConfig`` mark naming the job that made it, so cleanup after
a crash removes only a clone this job made, never a VM someone else named the same.

Blocking calls; asyncio callers run them in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from ._collector import moref_of, retrieve_one, translated_faults
from .errors import VSphereError
from .tasks import CancelCheck, ProgressCallback, wait_for_task

DEFAULT_TIMEOUT = 3600.0
"""Seconds to wait for a clone (it copies every disk)."""
MARK_KEY = "bulwark.restore_job"


class NameTaken(VSphereError):
    """A VM of that name already exists in the folder the clone would go to."""


@dataclass(frozen=True, slots=True)
class Clone:
    moref: str
    name: str
    folder: str


def _placement(client: Any, vm: Any) -> dict[str, Any]:
    return retrieve_one(
        client, vm, vim.VirtualMachine, ["name", "parent", "resourcePool", "runtime.host"]
    )


def find_in_folder(client: Any, folder: Any, name: str) -> str | None:
    """The moref of the VM called ``name`` in ``folder``, or None."""
    found = client.content.searchIndex.FindChild(folder, name)
    return moref_of(found) if isinstance(found, vim.VirtualMachine) else None


def clone_from_snapshot(
    client: Any,
    vm_moref: Any,
    snapshot_moref: Any,
    name: str,
    *,
    mark: str,
    timeout: float = DEFAULT_TIMEOUT,
    on_progress: ProgressCallback | None = None,
    cancel_check: CancelCheck | None = None,
) -> Clone:
    """Create VM ``name`` from ``snapshot_moref`` of ``vm_moref``, powered off, marked with
    ``mark`` (see :func:`clone_made_by`). Raises :class:`NameTaken` if the name is in use."""
    vm = client.managed_object(vim.VirtualMachine, vm_moref)
    snapshot = client.managed_object(vim.vm.Snapshot, snapshot_moref)
    with translated_faults(client, f"reading where {vm._moId} lives"):
        where = _placement(client, vm)
    folder = where["parent"]
    if find_in_folder(client, folder, name) is not None:
        raise NameTaken(f"a VM named {name!r} already exists beside {where.get('name')}")
    spec = vim.vm.CloneSpec(
        location=vim.vm.RelocateSpec(
            pool=where.get("resourcePool"), host=where.get("runtime.host")
        ),
        snapshot=snapshot,
        powerOn=False,
        template=False,
        config=vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=MARK_KEY, value=mark)]),
    )
    what = f"cloning {where.get('name') or vm._moId} from {snapshot._moId} as {name!r}"
    with translated_faults(client, what):
        task = vm.CloneVM_Task(folder=folder, name=name, spec=spec)
    result = wait_for_task(client, task, timeout, on_progress, cancel_check, description=what)
    return Clone(moref_of(result) or "", name, moref_of(folder) or "")


def clone_made_by(client: Any, vm_moref: Any, name: str, mark: str) -> str | None:
    """The moref of the VM called ``name`` beside ``vm_moref`` if it carries ``mark``."""
    vm = client.managed_object(vim.VirtualMachine, vm_moref)
    with translated_faults(client, f"reading where {vm._moId} lives"):
        folder = _placement(client, vm)["parent"]
        found = find_in_folder(client, folder, name)
        if found is None:
            return None
        config = retrieve_one(
            client,
            client.managed_object(vim.VirtualMachine, found),
            vim.VirtualMachine,
            ["config.extraConfig"],
        ).get("config.extraConfig")
    marks = {o.key: str(o.value) for o in config or []}
    return found if marks.get(MARK_KEY) == mark else None


def destroy_vm(client: Any, vm_moref: Any, *, timeout: float = 600.0) -> None:
    """Power off (if on) and delete a VM and its files."""
    vm = client.managed_object(vim.VirtualMachine, vm_moref)
    state = retrieve_one(client, vm, vim.VirtualMachine, ["runtime.powerState"])
    if str(state.get("runtime.powerState")) == "poweredOn":
        with translated_faults(client, f"powering off {vm._moId}"):
            task = vm.PowerOffVM_Task()
        wait_for_task(client, task, timeout, description=f"powering off {vm._moId}")
    with translated_faults(client, f"deleting {vm._moId}"):
        task = vm.Destroy_Task()
    wait_for_task(client, task, timeout, description=f"deleting {vm._moId}")
