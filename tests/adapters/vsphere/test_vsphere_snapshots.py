"""Snapshots and tasks against the lab, on a VMDK server and on the RDM servers."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from app.adapters.vsphere import (
    ObjectNotFound,
    TaskFailed,
    VSphereClient,
    create_snapshot,
    list_snapshots,
    read_inventory,
    remove_snapshot,
    revert_snapshot,
    wait_for_task,
)
from tests.lab_fixture import Lab

pytestmark = pytest.mark.lab

SERVERS = {
    "EXCH-MBX01": "database on a VMDK",
    "EXCH-MBX02": "database on a physical-mode RDM",
    "EXCH-MBX03": "database on a virtual-mode RDM",
    "EXCH-MBX05": "several databases on physical-mode RDMs",
}


@pytest.mark.parametrize("name", list(SERVERS), ids=list(SERVERS.values()))
def test_create_revert_remove(lab: Lab, client: VSphereClient, name: str) -> None:
    vm = lab.exchange_vm(name)["moref"]
    assert list_snapshots(client, vm) == []

    first = create_snapshot(client, vm, "bulwark-before", "taken by the test", quiesce=True)
    second = create_snapshot(client, vm, "bulwark-after")
    snaps = list_snapshots(client, vm)
    assert [(s.moref, s.name, s.parent, s.is_current) for s in snaps] == [
        (first, "bulwark-before", None, False),
        (second, "bulwark-after", first, True),
    ]
    assert snaps[0].description == "taken by the test"
    assert snaps[0].quiesced is True
    assert snaps[0].vm_power_state == "poweredOn"
    assert snaps[0].created is not None

    revert_snapshot(client, first)
    assert [s.moref for s in list_snapshots(client, vm) if s.is_current] == [first]

    # Removing the parent keeps the child, which moves up to the root.
    remove_snapshot(client, first)
    snaps = list_snapshots(client, vm)
    assert [(s.moref, s.parent) for s in snaps] == [(second, None)]

    remove_snapshot(client, second)
    assert list_snapshots(client, vm) == []
    # The disks are untouched by all of this.
    after = read_inventory(client).vm(vm)
    assert after is not None
    assert [(d.key, d.backing) for d in after.disks] == [
        (d["key"], d["backing"]) for d in lab.exchange_vm(name)["disks"]
    ]
    assert not after.has_snapshots


@pytest.mark.parametrize("name", ["EXCH-MBX01", "EXCH-MBX03"])
def test_remove_with_children(lab: Lab, client: VSphereClient, name: str) -> None:
    vm = lab.exchange_vm(name)["moref"]
    root = create_snapshot(client, vm, "root")
    create_snapshot(client, vm, "child")
    create_snapshot(client, vm, "grandchild")
    assert len(list_snapshots(client, vm)) == 3
    remove_snapshot(client, root, remove_children=True)
    assert list_snapshots(client, vm) == []


def test_snapshots_show_in_the_inventory(lab: Lab, client: VSphereClient) -> None:
    vm = lab.exchange_vm("EXCH-MBX02")["moref"]
    snap = create_snapshot(client, vm, "bulwark-visible")
    try:
        seen = read_inventory(client).vm(vm)
        assert seen is not None
        assert seen.snapshot_names == ("bulwark-visible",)
        assert seen.current_snapshot == snap
    finally:
        remove_snapshot(client, snap)


def test_removing_a_snapshot_that_is_gone(lab: Lab, client: VSphereClient) -> None:
    vm = lab.exchange_vm("EXCH-MBX01")["moref"]
    snap = create_snapshot(client, vm, "short-lived")
    remove_snapshot(client, snap)
    with pytest.raises(ObjectNotFound):
        remove_snapshot(client, snap)


def test_a_failed_task_carries_the_fault(lab: Lab, client: VSphereClient) -> None:
    vm = client.managed_object(vim.VirtualMachine, lab.exchange_vm("EXCH-MBX04")["moref"])
    task = vm.PowerOnVM_Task()  # it is already on
    with pytest.raises(TaskFailed) as caught:
        wait_for_task(client, task, timeout=30, description="powering on EXCH-MBX04")
    assert caught.value.fault == "InvalidPowerState"
    assert caught.value.task == task._moId
    assert str(caught.value).startswith("powering on EXCH-MBX04 failed:")


def test_waiting_reports_progress_and_returns_the_result(lab: Lab, client: VSphereClient) -> None:
    vm = client.managed_object(vim.VirtualMachine, lab.exchange_vm("EXCH-MBX06")["moref"])
    seen: list[int] = []
    task = vm.CreateSnapshot_Task(name="progress", description="", memory=False, quiesce=False)
    result = wait_for_task(client, task, timeout=30, on_progress=seen.append)
    assert isinstance(result, vim.vm.Snapshot)
    assert all(0 <= p <= 100 for p in seen)
    remove_snapshot(client, result._moId)


def test_waiting_for_a_task_that_never_existed(client: VSphereClient) -> None:
    with pytest.raises(ObjectNotFound):
        wait_for_task(client, "task-does-not-exist", timeout=5)
