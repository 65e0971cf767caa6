"""The lab's own promises (lab/README.md), which other parts of Bulwark's tests rely on.

These go through pyVmomi directly: they check the simulated vCenter, not the adapter.
"""

from __future__ import annotations

import hashlib
import ssl
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from pyVmomi import vim, vmodl

from app.adapters.vsphere import VSphereClient, read_inventory, wait_for_task
from tests.lab_fixture import Lab

pytestmark = pytest.mark.lab


def vm_named(client: VSphereClient, lab: Lab, name: str) -> vim.VirtualMachine:
    return client.managed_object(vim.VirtualMachine, lab.exchange_vm(name)["moref"])


def disk_keys(vm: vim.VirtualMachine) -> list[tuple[int, str]]:
    return [
        (d.key, type(d.backing).__name__.rsplit(".", 1)[-1])
        for d in vm.config.hardware.device
        if isinstance(d, vim.vm.device.VirtualDisk)
    ]


def test_estate_file_describes_what_is_served(lab: Lab) -> None:
    estate = lab.estate
    assert estate["schema"] == "bulwark-lab-estate/1"
    assert estate["url"] == lab.url
    assert estate["vm_count_total"] == estate["ordinary_vm_count"] + len(estate["exchange_vms"])
    layouts = {vm["layout"] for vm in estate["exchange_vms"]}
    assert layouts == {"vmdk", "rdm-physical", "rdm-virtual"}
    assert any(vm["custom_attribute"] is None for vm in estate["exchange_vms"])
    assert any(len(vm["databases"]) > 1 for vm in estate["exchange_vms"])
    luns = {lun["canonical_name"] for lun in estate["luns"]}
    for vm in estate["exchange_vms"]:
        for disk in vm["disks"]:
            if disk["backing"] != "flat":
                assert disk["canonical_name"] in luns


def test_flat_vmdks_hold_their_content_on_the_datastore(lab: Lab) -> None:
    for vm in lab.estate["exchange_vms"]:
        for disk in vm["disks"]:
            if disk["backing"] != "flat":
                continue
            data = Path(disk["local_path"]).read_bytes()
            assert len(data) == disk["content_bytes"] > 0
            assert hashlib.sha256(data).hexdigest() == disk["content_sha256"]
            assert data.startswith(b"BULWARK-LAB VMDK\nvm=" + vm["name"].encode())


def test_flat_vmdk_downloads_over_folder(lab: Lab, client: VSphereClient) -> None:
    disk = lab.exchange_vm("EXCH-MBX01")["disks"][1]
    datastore, path = disk["file_name"][1:].split("] ", 1)
    flat = path.replace(".vmdk", "-flat.vmdk")
    query = urllib.parse.urlencode(
        {"dcPath": lab.estate["datacenter"]["name"], "dsName": datastore}
    )
    url = f"https://{lab.host}:{lab.port}/folder/{flat}?{query}"
    request = urllib.request.Request(url, headers={"Cookie": client.stub.cookie})
    context = ssl._create_unverified_context()  # the lab's own certificate, in a test
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        data = response.read()
    assert hashlib.sha256(data).hexdigest() == disk["content_sha256"]


@pytest.mark.parametrize("name", ["EXCH-MBX02", "EXCH-MBX03"])
def test_rdm_vm_survives_reconfigure_and_storage_refresh(
    lab: Lab, client: VSphereClient, name: str
) -> None:
    vm = vm_named(client, lab, name)
    before = disk_keys(vm)
    assert any(kind == "RawDiskMappingVer1BackingInfo" for _, kind in before)

    task = vm.ReconfigVM_Task(vim.vm.ConfigSpec(annotation="reconfigured by a test"))
    wait_for_task(client, task, timeout=30)
    vm.RefreshStorageInfo()
    assert disk_keys(vm) == before
    assert vm.config.annotation == "reconfigured by a test"
    layout_keys = {d.key for d in vm.layout.disk}
    assert {key for key, _ in before} <= layout_keys


def test_an_rdm_disk_can_be_added_and_removed(lab: Lab, client: VSphereClient) -> None:
    vm = vm_named(client, lab, "EXCH-MBX03")
    before = disk_keys(vm)
    backing = vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo(
        compatibilityMode="physicalMode",
        deviceName="/vmfs/devices/disks/naa.6001405aaaaaaaaaaaaaaaaaaaaaaaaa",
        lunUuid="0200000000" + "6001405aaaaaaaaaaaaaaaaaaaaaaaaa" + "46494c45494f",
        fileName="",
    )
    disk = vim.vm.device.VirtualDisk(
        key=-1, controllerKey=1001, unitNumber=5, capacityInKB=10 * 1024 * 1024, backing=backing
    )
    add = vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk)
    wait_for_task(client, vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[add])), timeout=30)

    added = [
        d
        for d in vm.config.hardware.device
        if isinstance(d, vim.vm.device.VirtualDisk)
        and d.controllerKey == 1001
        and d.unitNumber == 5
    ]
    assert len(added) == 1
    new = added[0]
    assert new.key not in {key for key, _ in before}
    assert new.backing.diskMode == "independent_persistent"
    assert new.backing.fileName.endswith(".vmdk")

    remove = vim.vm.device.VirtualDeviceSpec(
        operation="remove", fileOperation="destroy", device=new
    )
    wait_for_task(client, vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[remove])), timeout=30)
    assert disk_keys(vm) == before


def test_remove_all_snapshots_on_an_rdm_vm(lab: Lab, client: VSphereClient) -> None:
    vm = vm_named(client, lab, "EXCH-MBX05")
    for name in ("one", "two"):
        wait_for_task(client, vm.CreateSnapshot_Task(name, "", False, False), timeout=30)
    wait_for_task(client, vm.RemoveAllSnapshots_Task(), timeout=30)
    assert vm.snapshot is None


def test_cloning_an_rdm_vm_is_refused_not_crashed(lab: Lab, client: VSphereClient) -> None:
    vm = vm_named(client, lab, "EXCH-MBX02")
    with pytest.raises(vmodl.fault.NotSupported):
        vm.CloneVM_Task(
            folder=vm.parent, name="copy", spec=vim.vm.CloneSpec(location=vim.vm.RelocateSpec())
        )
    assert vm.name == "EXCH-MBX02"  # the lab still answers


def test_unset_properties_read_as_none(lab: Lab, client: VSphereClient) -> None:
    # The simulator alone drops the connection here (it indexes an empty result).
    assert vm_named(client, lab, "EXCH-MBX04").snapshot is None


def test_paging_tokens_follow_maxobjects(client: VSphereClient) -> None:
    pc = client.content.propertyCollector
    view = client.content.viewManager.CreateContainerView(
        client.content.rootFolder, [vim.VirtualMachine], True
    )
    try:
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[
                vmodl.query.PropertyCollector.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[
                        vmodl.query.PropertyCollector.TraversalSpec(
                            name="v", type=vim.view.ContainerView, path="view", skip=False
                        )
                    ],
                )
            ],
            propSet=[
                vmodl.query.PropertyCollector.PropertySpec(
                    type=vim.VirtualMachine, pathSet=["name"]
                )
            ],
        )
        options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=4)
        first = pc.RetrievePropertiesEx([spec], options)
        assert len(first.objects) == 4 and first.token
        second = pc.ContinueRetrievePropertiesEx(first.token)
        assert len(second.objects) == 4
        pc.CancelRetrievePropertiesEx(second.token)
        with pytest.raises(vmodl.fault.InvalidArgument):
            pc.ContinueRetrievePropertiesEx(second.token)
    finally:
        view.DestroyView()


def test_wait_for_updates_reports_task_state(lab: Lab, client: VSphereClient) -> None:
    vm = vm_named(client, lab, "EXCH-MBX01")
    task = vm.ReconfigVM_Task(vim.vm.ConfigSpec(annotation="watched"))
    collector = client.content.propertyCollector.CreatePropertyCollector()
    try:
        collector.CreateFilter(
            vmodl.query.PropertyCollector.FilterSpec(
                objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=task)],
                propSet=[
                    vmodl.query.PropertyCollector.PropertySpec(
                        type=vim.Task, pathSet=["info.state"]
                    )
                ],
            ),
            partialUpdates=False,
        )
        update = collector.WaitForUpdatesEx(
            "", vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=5)
        )
        changes = {
            c.name: c.val for f in update.filterSet for o in f.objectSet for c in o.changeSet
        }
        assert changes["info.state"] == "success"
    finally:
        collector.Destroy()


def test_inventory_is_unchanged_by_the_lab_tests(lab: Lab, client: VSphereClient) -> None:
    inventory = read_inventory(client)
    for expected in lab.estate["exchange_vms"]:
        vm = inventory.vm(expected["moref"])
        assert vm is not None
        assert [d.key for d in vm.disks] == [d["key"] for d in expected["disks"]]
