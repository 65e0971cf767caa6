"""Restoring a VM snapshot as a new VM, against the lab: the clone is made from the snapshot
(not from the VM as it is now), powered off, beside the original, audited; a name in use is
refused and the VM that has it is left alone."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from app.adapters import vsphere
from app.adapters.vsphere._collector import retrieve_one
from tests.api.conftest import assert_problem
from tests.protection.conftest import backup_now, job, make_policy, restore_points, run_jobs
from tests.protection.test_backup_flow import target
from tests.web.conftest import form_token, sign_in

pytestmark = pytest.mark.lab


def vm_props(vc, moref: str) -> dict:
    vm = vc.managed_object(vim.VirtualMachine, moref)
    return retrieve_one(
        vc,
        vm,
        vim.VirtualMachine,
        ["name", "parent", "runtime.powerState", "config.hardware.device", "config.extraConfig"],
    )


def disks(props: dict) -> list[int]:
    return sorted(
        d.capacityInKB
        for d in props["config.hardware.device"]
        if isinstance(d, vim.vm.device.VirtualDisk)
    )


def remove_disk(vc, vm_moref: str, key: int) -> None:
    """Detach a disk from the VM (its file stays), as an operator might after a backup."""
    vm = vc.managed_object(vim.VirtualMachine, vm_moref)
    device = next(d for d in vm_props(vc, vm_moref)["config.hardware.device"] if d.key == key)
    spec = vim.vm.ConfigSpec(
        deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="remove", device=device)]
    )
    vsphere.wait_for_task(vc, vm.ReconfigVM_Task(spec=spec), 60)


def new_vm_request(point_id: int, name: str, **params) -> dict:
    return {
        "kind": "restore",
        "restore_point_id": point_id,
        "params": {"mode": "new_vm", "new_vm_name": name, **params},
    }


def test_restore_as_a_new_vm(client, admin, estate, runtime, worker, vc):
    policy = make_policy(client, admin, "DB01", target(estate, "EXCH-MBX01", "DB01"))
    (backup,) = backup_now(client, admin, runtime, worker, policy["id"])
    (point,) = restore_points(client, admin, policy_id=policy["id"])
    source = estate.vm("EXCH-MBX01")
    before = vm_props(vc, source)
    remove_disk(vc, source, 2032)  # the VM changes after the restore point was taken
    assert len(disks(vm_props(vc, source))) == len(disks(before)) - 1

    # Bad requests are refused with the reason; nothing starts.
    post = lambda body: client.post("/api/v1/jobs", json=body, headers=admin)  # noqa: E731
    assert_problem(post(new_vm_request(point["id"], "")), 422, "new_vm_name")
    assert_problem(post(new_vm_request(point["id"], "a/b", confirm="a/b")), 422, "new_vm_name")
    assert_problem(post(new_vm_request(point["id"], "EXCH-MBX01", confirm="EXCH-MBX01")), 422)
    assert_problem(post(new_vm_request(point["id"], "EXCH-MBX01-restored")), 422, "confirm")
    assert_problem(
        post(new_vm_request(point["id"], "EXCH-MBX01-restored", confirm="EXCH-MBX01")),
        422,
        "confirm",
    )

    r = post(new_vm_request(point["id"], "EXCH-MBX01-restored", confirm="EXCH-MBX01-restored"))
    assert r.status_code == 202, r.text
    restore = r.json()
    assert run_jobs(worker) == [restore["id"]]
    done = job(client, admin, restore["id"])
    assert done["state"] == "succeeded", done["error"]
    clone = done["result"]["details"]["vm"]
    assert done["result"]["details"]["powered_on"] is False

    made = vm_props(vc, clone)
    assert made["name"] == "EXCH-MBX01-restored"
    assert made["runtime.powerState"] == "poweredOff"
    assert made["parent"]._moId == before["parent"]._moId  # beside the original
    assert disks(made) == disks(before)  # as the VM was in the snapshot, with both disks
    marks = {o.key: o.value for o in made["config.extraConfig"]}
    assert marks["bulwark.restore_job"] == f"job-{restore['id']}"
    # The original is untouched: still running, still without the disk removed after the backup.
    after = vm_props(vc, source)
    assert after["runtime.powerState"] == "poweredOn"
    assert len(disks(after)) == len(disks(before)) - 1

    audit = client.get("/api/v1/audit-events?action=restore.new_vm", headers=admin).json()
    assert audit["total"] == 1
    entry = audit["items"][0]
    assert entry["object_id"] == str(point["id"]) and entry["actor"].startswith("user-admin")
    assert entry["detail"]["new_vm"] == "EXCH-MBX01-restored"
    assert entry["detail"]["new_vm_moref"] == clone
    assert backup["id"] != restore["id"]


def test_restore_as_a_new_vm_powered_on_when_asked(client, admin, estate, runtime, worker, vc):
    policy = make_policy(client, admin, "DB01", target(estate, "EXCH-MBX01", "DB01"))
    backup_now(client, admin, runtime, worker, policy["id"])
    (point,) = restore_points(client, admin, policy_id=policy["id"])
    body = new_vm_request(point["id"], "EXCH-MBX01-test", confirm="EXCH-MBX01-test", power_on=True)
    r = client.post("/api/v1/jobs", json=body, headers=admin)
    assert r.status_code == 202, r.text
    run_jobs(worker)
    done = job(client, admin, r.json()["id"])
    assert done["state"] == "succeeded", done["error"]
    assert vm_props(vc, done["result"]["details"]["vm"])["runtime.powerState"] == "poweredOn"


def test_a_name_in_use_fails_and_leaves_that_vm_alone(client, admin, estate, runtime, worker, vc):
    policy = make_policy(client, admin, "DB01", target(estate, "EXCH-MBX01", "DB01"))
    backup_now(client, admin, runtime, worker, policy["id"])
    (point,) = restore_points(client, admin, policy_id=policy["id"])
    taken = "EXCH-MBX06"  # another VM in the same folder
    r = client.post(
        "/api/v1/jobs", json=new_vm_request(point["id"], taken, confirm=taken), headers=admin
    )
    assert r.status_code == 202, r.text
    run_jobs(worker)
    done = job(client, admin, r.json()["id"])
    assert done["state"] == "failed"
    assert "already exists" in done["error"]
    assert done["attempts"] == 1  # refused for good, not retried
    # Cleanup looked for a clone of this job's and found none: the other VM is still there.
    assert vm_props(vc, estate.vm(taken))["name"] == taken


def test_dashboard_restore_as_a_new_vm(client, admin, estate, runtime, worker, vc):
    policy = make_policy(client, admin, "DB01", target(estate, "EXCH-MBX01", "DB01"))
    backup_now(client, admin, runtime, worker, policy["id"])
    (point,) = restore_points(client, admin, policy_id=policy["id"])
    assert sign_in(client, "admin", "admin-password-123").status_code == 303
    detail = client.get(f"/restore-points/{point['id']}").text
    assert f'href="/restore-points/{point["id"]}/new-vm"' in detail
    path = f"/restore-points/{point['id']}/new-vm"
    page = client.get(path)
    assert page.status_code == 200
    assert 'value="EXCH-MBX01-restored"' in page.text and "powered off" in page.text
    token = form_token(client, path)

    differ = client.post(path, data={"csrf_token": token, "name": "copy1", "confirm": "copy2"})
    assert differ.status_code == 422 and "The two names differ" in differ.text
    no_csrf = client.post(path, data={"name": "copy1", "confirm": "copy1"})
    assert no_csrf.status_code in (400, 403)

    ok = client.post(
        path,
        data={"csrf_token": token, "name": "copy1", "confirm": "copy1"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"].startswith("/jobs/")
    job_id = int(ok.headers["location"].rsplit("/", 1)[1])
    assert run_jobs(worker) == [job_id]
    done = job(client, admin, job_id)
    assert done["state"] == "succeeded", done["error"]
    assert done["params"]["power_on"] is False  # the box was left unticked
    made = vm_props(vc, done["result"]["details"]["vm"])
    assert made["name"] == "copy1" and made["runtime.powerState"] == "poweredOff"
