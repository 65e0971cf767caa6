"""Whole-VM restores from the repository, against the lab: back up, delete the VM, restore it
as a new VM (every disk byte for byte, the configuration field by field); restore over the
original (powered off first, the name typed, differences shown first); the restore-point page
offers exactly what the live copies allow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.adapters import vsphere
from app.adapters.vsphere import vm_config
from app.adapters.vsphere.datastore_files import (
    DatastoreFiles,
    DatastorePath,
    datacenter_path,
    flat_extent,
)
from app.repository.store import BLOCK_SIZE, open_repository_at
from tests.api.conftest import assert_problem
from tests.image.conftest import flat_disks
from tests.protection.conftest import (
    backup_now,
    events,
    job,
    load_job,
    restore_points,
    run_jobs,
)

SERVER = "EXCH-MBX03"  # system disk flat, database and logs on virtual-mode RDMs


@pytest.fixture
def point(client, admin, runtime, worker, image_policy) -> dict:
    (done,) = backup_now(client, admin, runtime, worker, image_policy()["id"])
    assert done["state"] == "succeeded", done["error"]
    (only,) = restore_points(client, admin)
    return only


def restore(client, admin, point: dict, **body) -> int:
    r = client.post(f"/api/v1/restore-points/{point['id']}/whole-vm", json=body, headers=admin)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_backup_captures_the_configuration_with_the_images(point, vc, estate, repository):
    config = point["details"]["vm_config"]
    now = vm_config.read_config(vc, estate.vm(SERVER))
    assert vm_config.differences(config, now) == []
    assert config["num_cpus"] == now["num_cpus"] > 0 and config["memory_mb"] > 0
    assert [d["key"] for d in config["disks"]] == [2000, 2016, 2032]
    assert [c["key"] for c in config["controllers"]] == [1000, 1001, 1002]
    assert config["nics"][0]["network"] == "VM Network"
    assert config["custom_attributes"]["bulwark.exchange"] == "DB03=disk:2016;logs:2032"
    assert config["vmx"] and f'displayName = "{SERVER}"' in config["vmx"]  # the lab's .vmx
    # Stored with every disk's manifest: the repository alone can rebuild the VM.
    repo = open_repository_at(repository["path"])
    for disk in point["details"]["disks"]:
        assert repo.load_manifest(disk["manifest"]).source["vm_config"] == config


def test_delete_the_vm_and_restore_it_as_a_new_vm(
    client, admin, runtime, worker, lab, vc, estate, point
):
    originals = {d["key"]: Path(d["local_path"]).read_bytes() for d in flat_disks(lab, SERVER)}
    captured = point["details"]["vm_config"]
    vsphere.destroy_vm(vc, estate.vm(SERVER))  # the disaster
    assert not vm_config.vm_exists(vc, estate.vm(SERVER))

    offers = client.get(f"/api/v1/restore-points/{point['id']}/restores", headers=admin).json()
    by_key = {o["key"]: o for o in offers}
    assert by_key["whole_vm_new"]["available"] is True
    assert by_key["revert"]["available"] is False
    assert "no VM snapshot" in by_key["revert"]["reason"]

    restore_id = restore(
        client, admin, point, new_vm_name=SERVER, datastore="VMFS-GEN-01", network="VM Network"
    )
    assert run_jobs(worker) == [restore_id]
    done = job(client, admin, restore_id)
    assert done["state"] == "succeeded", done["error"]
    assert done["bytes_done"] == done["bytes_total"] == sum(map(len, originals.values()))
    result = done["result"]["details"]
    assert result["mib_per_s"] > 0 and [d["key"] for d in result["disks"]] == [2000, 2016, 2032]
    assert all(d["mib_per_s"] > 0 for d in result["disks"])
    assert any("MiB/s overall" in e for e in events(done))

    moref = result["vm"]
    after = vm_config.read_config(vc, moref)
    # Field by field: hardware, controllers, disk keys and units, NICs, custom attributes.
    assert vm_config.differences(captured, after) == []
    assert after["name"] == SERVER and after["vm_path"].startswith("[VMFS-GEN-01] ")
    assert [n["start_connected"] for n in after["nics"]] == [False]  # never on the wire
    assert vsphere.power_state(vc, moref) == "poweredOff"
    # Every disk byte for byte, from the new VM's own files.
    files = DatastoreFiles(vc, datacenter_path(vc, moref))
    for disk in after["disks"]:
        descriptor = DatastorePath.parse(disk["file"])
        data = b"".join(files.iter_bytes(flat_extent(descriptor)))
        assert data == originals[disk["key"]], disk["label"]
        text = b"".join(files.iter_bytes(descriptor)).decode()
        assert f"RW {disk['capacity_bytes'] // 512} VMFS" in text
    assert load_job(runtime, restore_id).leftovers == []


def test_restore_as_new_vm_beside_the_original_keeps_it_off_its_databases(
    client, admin, worker, vc, estate, point
):
    restore_id = restore(client, admin, point, new_vm_name=f"{SERVER}-copy", connect_network=True)
    assert run_jobs(worker) == [restore_id]
    done = job(client, admin, restore_id)
    assert done["state"] == "succeeded", done["error"]
    after = vm_config.read_config(vc, done["result"]["details"]["vm"])
    # The original still runs: the copy does not declare its databases (no second server).
    assert "bulwark.exchange" not in after["custom_attributes"]
    assert after["custom_attributes"]["owner"] == "Messaging team"
    assert [n["start_connected"] for n in after["nics"]] == [True]  # asked for
    # Defaults: the original's folder and datastore.
    assert after["folder"] == point["details"]["vm_config"]["folder"]
    assert after["vm_path"].startswith("[VMFS-SYS-01] ")


def test_bad_requests_are_refused_with_the_reason(client, admin, worker, point, vc):
    url = f"/api/v1/restore-points/{point['id']}/whole-vm"
    r = client.post(url, json={"target": "new", "new_vm_name": "a/b"}, headers=admin)
    assert_problem(r, 422, "new_vm_name")
    r = client.post(url, json={"target": "original", "confirm": "nope"}, headers=admin)
    assert_problem(r, 422, "confirm")
    r = client.post(url, json={"target": "sideways"}, headers=admin)
    assert r.status_code == 422
    # A datastore that does not exist fails the job at once, naming it, and leaves no VM.
    restore_id = restore(client, admin, point, new_vm_name="X-1", datastore="NO-SUCH-DS")
    assert run_jobs(worker) == [restore_id]
    done = job(client, admin, restore_id)
    assert done["state"] == "failed" and "NO-SUCH-DS" in done["error"]
    assert done["attempts"] == 1  # permanent: not retried


def test_restore_over_the_original_powers_off_and_shows_differences_first(
    client, admin, worker, lab, vc, estate, point
):
    disks = flat_disks(lab, SERVER)
    originals = {d["key"]: Path(d["local_path"]).read_bytes() for d in disks}
    vm = estate.vm(SERVER)
    # The guest goes on writing, and someone adds memory after the backup.
    for d in disks:
        with open(d["local_path"], "r+b") as f:
            f.seek(BLOCK_SIZE)
            f.write(os.urandom(4096))
    task = vc.managed_object(vm_config.vim.VirtualMachine, vm).ReconfigVM_Task(
        spec=vm_config.vim.vm.ConfigSpec(memoryMB=point["details"]["vm_config"]["memory_mb"] * 2)
    )
    vsphere.wait_for_task(vc, task, 60)

    shown = client.get(
        f"/api/v1/restore-points/{point['id']}/vm-config?compare=true", headers=admin
    ).json()
    assert [d["field"] for d in shown["differences"]] == ["memory (MiB)"]
    assert vsphere.power_state(vc, vm) == "poweredOn"

    restore_id = restore(client, admin, point, target="original", confirm=SERVER)
    assert run_jobs(worker) == [restore_id]
    done = job(client, admin, restore_id)
    assert done["state"] == "succeeded", done["error"]
    assert vsphere.power_state(vc, vm) == "poweredOff"
    assert done["result"]["details"]["differences"] == shown["differences"]
    for d in disks:
        assert Path(d["local_path"]).read_bytes() == originals[d["key"]], d["label"]


def test_a_failed_restore_removes_its_half_made_vm(
    client, admin, runtime, worker, vc, repository, point
):
    from tests.image.test_image_restore import damage_block

    damage_block(repository, point, 2032, 1)  # the last disk: the VM exists, two disks written
    name = f"{SERVER}-doomed"
    restore_id = restore(client, admin, point, new_vm_name=name)
    assert run_jobs(worker) == [restore_id]
    done = job(client, admin, restore_id)
    assert done["state"] == "failed"
    assert "Hard disk 3: block 1 is damaged" in done["error"]
    assert f"removed {name} (" in " ".join(events(done))
    folder = point["details"]["vm_config"]["folder"]
    assert vm_config.vm_made_by(vc, folder, name, f"job-{restore_id}") is None
    assert load_job(runtime, restore_id).leftovers == []
