"""Inventory read in bulk, compared with what the lab says it laid out (its estate JSON)."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from app.adapters.vsphere import (
    FLAT,
    RDM_PHYSICAL,
    RDM_VIRTUAL,
    Inventory,
    VSphereClient,
    connect,
    iter_vms,
    read_inventory,
    read_vms_naive,
)
from app.adapters.vsphere._collector import retrieve_view_pages
from app.adapters.vsphere._lean import retrieve_view_pages_lean
from tests.lab_fixture import Lab, running_lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def inventory(client: VSphereClient) -> Inventory:
    return read_inventory(client)


def test_infrastructure_matches_the_estate(lab: Lab, inventory: Inventory) -> None:
    estate = lab.estate
    assert [(dc.moref, dc.name) for dc in inventory.datacenters] == [
        (estate["datacenter"]["moref"], estate["datacenter"]["name"])
    ]
    (cluster,) = inventory.clusters
    assert cluster.name == estate["clusters"][0]["name"]
    assert cluster.datacenter == estate["datacenter"]["moref"]
    assert sorted(cluster.hosts) == sorted(estate["clusters"][0]["hosts"])

    hosts = {h.moref: h for h in inventory.hosts}
    assert {h["moref"]: h["name"] for h in estate["hosts"]} == {m: h.name for m, h in hosts.items()}
    for host in hosts.values():
        assert host.cluster == cluster.moref
        assert host.connection_state == "connected"
        assert len(host.datastores) == len(estate["datastores"])

    datastores = {d.moref: d for d in inventory.datastores}
    for expected in estate["datastores"]:
        ds = datastores[expected["moref"]]
        assert ds.name == expected["name"]
        assert ds.capacity_bytes == expected["capacity_bytes"]
        assert 0 < ds.free_bytes <= ds.capacity_bytes
        assert ds.type == "VMFS"
        assert ds.shared and sorted(ds.hosts) == sorted(hosts)
        assert ds.extents and ds.extents[0].startswith("naa.")
        assert ds.datacenter == estate["datacenter"]["moref"]


def test_every_vm_is_read(lab: Lab, inventory: Inventory) -> None:
    assert len(inventory.vms) == lab.estate["vm_count_total"]
    expected = {vm["moref"]: vm["name"] for vm in lab.estate["ordinary_vms"]}
    expected.update({vm["moref"]: vm["name"] for vm in lab.estate["exchange_vms"]})
    assert {vm.moref: vm.name for vm in inventory.vms} == expected


@pytest.mark.parametrize(
    "name", ["EXCH-MBX01", "EXCH-MBX02", "EXCH-MBX03", "EXCH-MBX04", "EXCH-MBX05", "EXCH-MBX06"]
)
def test_exchange_server_disks_match_the_estate(lab: Lab, inventory: Inventory, name: str) -> None:
    expected = lab.exchange_vm(name)
    vm = inventory.vm_named(name)
    assert vm is not None
    assert vm.moref == expected["moref"]
    assert vm.instance_uuid == expected["instance_uuid"]
    assert vm.bios_uuid == expected["bios_uuid"]
    assert vm.host == expected["host"]
    assert vm.power_state == expected["power_state"] == "poweredOn"
    assert vm.cbt_enabled is expected["cbt_enabled"]
    assert vm.tools_status == "toolsOk"
    assert vm.tools_running_status == "guestToolsRunning"
    assert vm.guest_os and "Windows" in vm.guest_os
    assert vm.folder_path == "Exchange"
    assert vm.datacenter == lab.estate["datacenter"]["moref"]
    assert not vm.has_snapshots

    assert [d.key for d in vm.disks] == [d["key"] for d in expected["disks"]]
    for disk, want in zip(vm.disks, expected["disks"], strict=True):
        assert disk.label == want["label"]
        assert disk.backing == want["backing"]
        assert disk.disk_mode == want["disk_mode"]
        assert disk.capacity_bytes == want["capacity_bytes"]
        assert disk.datastore == want["datastore"]
        assert disk.file_name == want["file_name"]
        assert disk.controller == want["controller"]
        assert disk.lun_uuid == want.get("lun_uuid")
        assert disk.device_name == want.get("device_name")
        assert disk.lun_canonical_name == want.get("canonical_name")


def test_each_database_layout_is_present(inventory: Inventory) -> None:
    kinds = {d.backing for vm in inventory.vms for d in vm.disks}
    assert {FLAT, RDM_PHYSICAL, RDM_VIRTUAL} <= kinds
    mbx02 = inventory.vm_named("EXCH-MBX02")
    assert mbx02 is not None
    physical = [d for d in mbx02.disks if d.backing == RDM_PHYSICAL]
    assert len(physical) == 2
    # Physical-mode RDMs cannot be in VMFS snapshots: ESXi reports them as independent.
    assert all(d.disk_mode == "independent_persistent" for d in physical)
    assert all(d.is_rdm and d.lun_uuid and d.device_name for d in physical)


def test_custom_attributes_are_read_by_name(lab: Lab, inventory: Inventory) -> None:
    field = lab.estate["custom_attribute"]
    for expected in lab.estate["exchange_vms"]:
        vm = inventory.vm_named(expected["name"])
        assert vm is not None
        assert vm.custom_attributes.get(field) == expected["custom_attribute"]
        assert vm.custom_attributes.get(lab.estate["owner_attribute"]) == expected["owner"]
    # The server without the attribute: nothing invented for it.
    mbx06 = inventory.vm_named("EXCH-MBX06")
    assert mbx06 is not None and field not in mbx06.custom_attributes
    for expected in lab.estate["ordinary_vms"]:
        vm = inventory.vm(expected["moref"])
        assert vm is not None
        assert field not in vm.custom_attributes
        assert vm.custom_attributes.get("owner") == expected.get("owner")


def test_ordinary_vms_power_state_folder_and_forgotten_snapshots(
    lab: Lab, inventory: Inventory
) -> None:
    for expected in lab.estate["ordinary_vms"]:
        vm = inventory.vm(expected["moref"])
        assert vm is not None
        assert vm.power_state == expected["power_state"]
        assert vm.snapshot_names == tuple(expected.get("snapshots") or ())
        assert vm.has_snapshots == bool(expected.get("snapshots"))
        assert vm.folder_path == "Workloads/" + vm.name.split("-")[0]
        assert vm.disks and vm.disks[0].backing == FLAT
    with_snapshots = [vm for vm in inventory.vms if vm.has_snapshots]
    assert with_snapshots, "the lab leaves a few snapshots behind on purpose"
    for vm in with_snapshots:
        assert vm.current_snapshot is not None


def test_a_small_page_size_gives_the_same_inventory(
    client: VSphereClient, inventory: Inventory
) -> None:
    assert read_inventory(client, page_size=7) == inventory


def test_small_pages_really_page(lab: Lab, client: VSphereClient) -> None:
    total = lab.estate["vm_count_total"]
    lean_pages = list(retrieve_view_pages_lean(client, vim.VirtualMachine, ["name"], 7))
    assert len(lean_pages) == -(-total // 7)
    assert all(len(page) <= 7 for page in lean_pages)
    assert sum(len(page) for page in lean_pages) == total
    pages = list(retrieve_view_pages(client, {vim.VirtualMachine: ["name"]}, 7))
    assert len(pages) == len(lean_pages)


def test_stopping_early_leaves_the_session_usable(client: VSphereClient) -> None:
    stream = iter_vms(client, page_size=5)
    first = [next(stream) for _ in range(3)]
    stream.close()  # cancels the rest of the paged result and destroys the view
    assert len(first) == 3
    assert len(list(iter_vms(client, page_size=5))) > 5


def test_naive_reading_gives_the_same_records(client: VSphereClient, inventory: Inventory) -> None:
    naive = read_vms_naive(client, limit=12)
    assert len(naive) == 12
    for vm in naive:
        assert inventory.vm(vm.moref) == vm
    exchange = [vm for vm in inventory.vms if vm.name.startswith("EXCH-")]
    everything = {vm.moref: vm for vm in read_vms_naive(client)}
    for vm in exchange:
        assert everything[vm.moref] == vm


def test_a_server_that_pages_smaller_than_asked(lab: Lab, inventory: Inventory) -> None:
    """vCenter may return fewer objects per page than maxObjects; tokens must be followed."""
    with (
        running_lab(extra_args=["--page-cap", "5"]) as capped,
        connect(
            capped.host,
            capped.port,
            capped.username,
            capped.password,
            trusted_thumbprint=capped.thumbprint,
        ) as session,
    ):
        pages = list(retrieve_view_pages_lean(session, vim.VirtualMachine, ["name"], 1000))
        assert all(len(page) <= 5 for page in pages)
        read = read_inventory(session, page_size=1000)
        assert len(read.vms) == capped.estate["vm_count_total"] == lab.estate["vm_count_total"]
        assert {vm.name for vm in read.vms} == {vm.name for vm in inventory.vms}
