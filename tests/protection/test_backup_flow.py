"""VM snapshot backups run for real: API → job engine → strategy → lab vCenter → catalog.

Policies are made through the API against servers discovered by syncing the lab; workers
claim and run the jobs. Pre/post-snapshot scripts run in the lab's stand-in guest (it stands
in for a Windows guest running Exchange, which cannot exist here), whose log tells what ran
in the guest and when.
"""

from __future__ import annotations

import pytest

from app.adapters import vsphere
from app.db.models import RestorePoint
from tests.api.conftest import assert_problem
from tests.protection.conftest import (
    backup_now,
    bulwark_snapshots,
    events,
    guest_log,
    make_policy,
    restore_points,
    utc,
)

pytestmark = pytest.mark.lab

QUIESCE = "quiesce-db.cmd DB03 & sleep 0.3"
RESUME = "resume-db.cmd DB03"


def point_details(runtime, point_id: int) -> dict:
    with runtime.db.session() as session:
        return dict(session.get(RestorePoint, point_id).details)


def target(estate, server: str, database: str) -> list[dict]:
    return [
        {
            "server_id": estate.server(server)["id"],
            "database_id": estate.database(server, database)["id"],
        }
    ]


def test_hot_application_snapshot_of_a_vmdk_database(client, admin, estate, runtime, worker, vc):
    policy = make_policy(client, admin, "DB01 hourly", target(estate, "EXCH-MBX01", "DB01"))
    (done,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert done["state"] == "succeeded", done["error"]
    assert done["attempts"] == 1

    vm = estate.vm("EXCH-MBX01")
    (snap,) = bulwark_snapshots(vc, vm)
    assert snap.name == f"bulwark-job-{done['id']}"
    assert snap.quiesced is True
    assert snap.vm_power_state == "poweredOn"
    assert f"job {done['id']}" in snap.description and "DB01 hourly" in snap.description

    (point,) = restore_points(client, admin, policy_id=policy["id"])
    assert point["job_id"] == done["id"]
    # The job keeps what its handler reported, and names the policy-wide run that queued it,
    # which lists it and inherits nothing but its creator.
    assert done["result"]["details"]["restore_point_id"] == point["id"]
    assert done["result"]["message"] == f"restore point {point['id']}"
    parent = client.get(f"/api/v1/jobs/{done['parent_id']}", headers=admin).json()
    assert [c["id"] for c in parent["children"]] == [done["id"]]
    assert parent["result"]["details"]["jobs"] == [done["id"]]
    assert done["created_by"] == parent["created_by"] != "system"
    assert point["database_id"] == estate.database("EXCH-MBX01", "DB01")["id"]
    assert point["consistency"] == "hot_application"
    assert "whole_database" in point["capabilities"]
    assert "instant_recovery" in point["capabilities"]  # kept on primary storage
    assert point["status"] == "available"
    (copy,) = point["copies"]
    assert copy["location"] == "vm_snapshot" and copy["reference"] == snap.moref
    assert copy["connection_id"] == estate.connection_id
    details = point_details(runtime, point["id"])
    assert details["snapshot_name"] == snap.name and details["vm"] == vm
    assert details["asked_consistency"] == "hot_application"
    assert details["quiesce_window_s"] is None  # VMware Tools quiesced inside the task

    steps = [e["step"] for e in done["events"]]
    for step in ("quiesce", "snapshot", "copy", "catalog", "retain"):
        assert step in steps
    assert guest_log(estate.lab, vm) == []  # no scripts: nothing ran in the guest
    audit = client.get("/api/v1/audit-events?action=restore_point.create", headers=admin).json()
    assert audit["total"] == 1


def test_scripted_snapshot_of_a_virtual_rdm_database(client, admin, estate, runtime, worker, vc):
    policy = make_policy(
        client,
        admin,
        "DB03 scripted",
        target(estate, "EXCH-MBX03", "DB03"),
        consistency="hot_crash_scripted",
        pre_script=QUIESCE,
        post_script=RESUME,
    )
    (done,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert done["state"] == "succeeded", done["error"]

    vm = estate.vm("EXCH-MBX03")
    (snap,) = bulwark_snapshots(vc, vm)
    assert snap.quiesced is False  # VMware Tools cannot quiesce Exchange on a virtual RDM
    pre, post = guest_log(estate.lab, vm)
    assert pre["arguments"] == f"/c {QUIESCE}" and pre["exit_code"] == 0
    assert post["arguments"] == f"/c {RESUME}" and post["exit_code"] == 0
    assert pre["user"] == estate.lab.estate["guest_username"]
    # quiesce ended, then the snapshot, then resume started
    assert utc(pre["ended"]) <= snap.created <= utc(post["started"])

    (point,) = restore_points(client, admin, policy_id=policy["id"])
    assert point["consistency"] == "hot_crash_scripted"
    assert "whole_database" in point["capabilities"]
    details = point_details(runtime, point["id"])
    window = details["quiesce_window_s"]
    assert 0.3 <= window < 10
    assert details["pre_script_exit"] == 0 and details["post_script_exit"] == 0
    assert any(m.startswith("quiesce window") for m in events(done))


def test_a_failing_pre_script_fails_the_job_and_resume_still_runs(
    client, admin, estate, runtime, worker, vc
):
    policy = make_policy(
        client,
        admin,
        "DB03 broken quiesce",
        target(estate, "EXCH-MBX03", "DB03"),
        consistency="hot_crash_scripted",
        pre_script="quiesce-db.cmd DB03 & exit 3",
        post_script=RESUME,
    )
    (done,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert done["state"] == "failed"
    assert done["attempts"] == done["max_attempts"] == 3
    assert "pre-snapshot script failed in EXCH-MBX03 (exit code 3)" in done["error"]

    vm = estate.vm("EXCH-MBX03")
    lines = guest_log(estate.lab, vm)
    # Every attempt: quiesce (exit 3), then resume anyway; never a snapshot in between.
    assert [line["arguments"] for line in lines] == [
        "/c quiesce-db.cmd DB03 & exit 3",
        f"/c {RESUME}",
    ] * 3
    assert bulwark_snapshots(vc, vm) == []
    assert restore_points(client, admin, policy_id=policy["id"]) == []
    assert job_leftovers(runtime, done["id"]) == []


def test_a_failing_post_script_fails_the_job_without_an_orphan_snapshot(
    client, admin, estate, runtime, worker, vc
):
    policy = make_policy(
        client,
        admin,
        "DB03 broken resume",
        target(estate, "EXCH-MBX03", "DB03"),
        consistency="hot_crash_scripted",
        pre_script=QUIESCE,
        post_script="resume-db.cmd DB03 & exit 5",
    )
    (done,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert done["state"] == "failed"
    messages = " ".join(events(done))
    assert "post-snapshot script failed in EXCH-MBX03 (exit code 5)" in messages
    assert "removed snapshot bulwark-job-" in messages

    vm = estate.vm("EXCH-MBX03")
    assert bulwark_snapshots(vc, vm) == []
    assert restore_points(client, admin, policy_id=policy["id"]) == []
    lines = guest_log(estate.lab, vm)
    pres = [x for x in lines if "quiesce-db" in x["arguments"]]
    posts = [x for x in lines if "resume-db" in x["arguments"]]
    assert pres and len(posts) >= len(pres)
    # Resume was tried after every quiesce, and last.
    assert "resume-db" in lines[-1]["arguments"]


def test_cold_snapshot_shuts_the_vm_down_and_powers_it_on(
    client, admin, estate, runtime, worker, vc
):
    policy = make_policy(
        client, admin, "DB01 cold", target(estate, "EXCH-MBX01", "DB01"), consistency="cold"
    )
    (done,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert done["state"] == "succeeded", done["error"]

    vm = estate.vm("EXCH-MBX01")
    (snap,) = bulwark_snapshots(vc, vm)
    assert snap.vm_power_state == "poweredOff"  # taken while the VM was down
    assert snap.quiesced is False
    assert vsphere.power_state(vc, vm) == "poweredOn"
    (point,) = restore_points(client, admin, policy_id=policy["id"])
    assert point["consistency"] == "cold"
    details = point_details(runtime, point["id"])
    assert details["shutdown"] == "guest_shutdown"
    assert details["quiesce_window_s"] > 0
    assert any("shut down for a cold snapshot" in m for m in events(done))
    # The guest came back with VMware Tools: scripts can run in it again.
    guest = vsphere.GuestOperations(
        estate.lab.estate["guest_username"], estate.lab.estate["guest_password"]
    )
    assert guest.run(vc, vm, "exit 0", timeout_s=10).exit_code == 0


def test_cold_snapshot_of_a_vm_that_is_off_leaves_it_off(
    client, admin, estate, runtime, worker, vc
):
    vm = estate.vm("EXCH-MBX03")
    vsphere.shut_down(vc, vm, timeout=30)
    policy = make_policy(
        client, admin, "DB03 cold", target(estate, "EXCH-MBX03", "DB03"), consistency="cold"
    )
    (done,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert done["state"] == "succeeded", done["error"]
    assert vsphere.power_state(vc, vm) == "poweredOff"
    (snap,) = bulwark_snapshots(vc, vm)
    assert snap.vm_power_state == "poweredOff"
    assert restore_points(client, admin, policy_id=policy["id"])[0]["consistency"] == "cold"


def test_the_whole_server_and_several_databases_in_one_policy(
    client, admin, estate, runtime, worker, vc
):
    mbx04 = estate.server("EXCH-MBX04")
    targets = [{"server_id": mbx04["id"], "database_id": d["id"]} for d in mbx04["databases"]]
    targets += target(estate, "EXCH-MBX01", "DB01")
    policy = make_policy(client, admin, "many", targets, keep_on_primary=3)
    jobs = backup_now(client, admin, runtime, worker, policy["id"])
    assert [j["state"] for j in jobs] == ["succeeded"] * 4
    points = restore_points(client, admin, policy_id=policy["id"])
    assert len(points) == 4
    assert len(bulwark_snapshots(vc, estate.vm("EXCH-MBX04"))) == 3
    assert len(bulwark_snapshots(vc, estate.vm("EXCH-MBX01"))) == 1


def test_a_policy_the_advisor_forbids_is_refused(client, admin, estate):
    # VMware Tools cannot quiesce Exchange on a virtual-mode RDM.
    r = client.post(
        "/api/v1/policies",
        headers=admin,
        json={
            "name": "impossible",
            "method": "vmfs_snapshot",
            "consistency": "hot_application",
            "rpo_minutes": 60,
            "targets": target(estate, "EXCH-MBX03", "DB03"),
        },
    )
    body = assert_problem(r, 422, "cannot reach hot_application")
    assert body["type"].endswith("/problems/protection-not-possible")
    # VMFS cannot snapshot a physical-mode RDM at all.
    r = client.post(
        "/api/v1/policies",
        headers=admin,
        json={
            "name": "impossible",
            "method": "vmfs_snapshot",
            "consistency": "cold",
            "rpo_minutes": 60,
            "targets": target(estate, "EXCH-MBX02", "DB02"),
        },
    )
    assert_problem(r, 422, "physical-mode RDM")
    assert client.get("/api/v1/policies", headers=admin).json()["total"] == 0


def job_leftovers(runtime, job_id: int) -> list:
    from app.db.models import Job

    with runtime.db.session() as session:
        return list(session.get(Job, job_id).leftovers or [])
