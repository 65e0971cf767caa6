"""Snapshots kept on primary storage, legal holds, reverting to a restore point, and the
scheduler running RPO policies, against the lab."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.adapters import vsphere
from app.db.types import utcnow
from app.jobs import Scheduler
from tests.api.conftest import assert_problem
from tests.protection.conftest import (
    backup_now,
    bulwark_snapshots,
    job,
    make_policy,
    restore_points,
    run_jobs,
)
from tests.protection.test_backup_flow import target

pytestmark = pytest.mark.lab


def by_job(points: list[dict]) -> dict[int, dict]:
    return {p["job_id"]: p for p in points}


def test_retention_keeps_the_newest_n_and_never_a_foreign_snapshot(
    client, admin, estate, runtime, worker, vc
):
    vm = estate.vm("EXCH-MBX01")
    foreign = vsphere.create_snapshot(vc, vm, "before patching", "taken by an operator")
    policy = make_policy(
        client, admin, "keep 2", target(estate, "EXCH-MBX01", "DB01"), keep_on_primary=2
    )
    jobs = [backup_now(client, admin, runtime, worker, policy["id"])[0] for _ in range(4)]
    assert [j["state"] for j in jobs] == ["succeeded"] * 4

    names = [s.name for s in bulwark_snapshots(vc, vm)]
    assert names == [f"bulwark-job-{j['id']}" for j in jobs[2:]]  # exactly the newest two
    assert foreign in {s.moref for s in vsphere.list_snapshots(vc, vm)}  # never touched

    points = by_job(restore_points(client, admin, policy_id=policy["id"]))
    for old in jobs[:2]:
        point = points[old["id"]]
        assert point["status"] == "expired" and point["expires_at"] is not None
        assert point["copies"][0]["removed_at"] is not None
    for kept in jobs[2:]:
        assert points[kept["id"]]["status"] == "available"
    audit = client.get("/api/v1/audit-events?action=restore_point.expire", headers=admin).json()
    assert audit["total"] == 2


def test_a_legal_hold_on_the_server_blocks_expiry(client, admin, estate, runtime, worker, vc):
    server = estate.server("EXCH-MBX01")
    r = client.post(
        "/api/v1/legal-holds",
        headers=admin,
        json={
            "name": "records request 2026-17",
            "reason": "litigation",
            "scope": "server",
            "server_id": server["id"],
        },
    )
    assert r.status_code == 201, r.text
    hold = r.json()
    policy = make_policy(
        client, admin, "keep 2", target(estate, "EXCH-MBX01", "DB01"), keep_on_primary=2
    )
    for _ in range(4):
        backup_now(client, admin, runtime, worker, policy["id"])

    vm = estate.vm("EXCH-MBX01")
    assert len(bulwark_snapshots(vc, vm)) == 4  # nothing expired
    points = restore_points(client, admin, policy_id=policy["id"])
    assert [p["status"] for p in points] == ["available"] * 4
    assert all(p["on_hold"] for p in points)

    # Released, the next run brings primary storage back to two.
    assert client.post(f"/api/v1/legal-holds/{hold['id']}/release", headers=admin).is_success
    (latest,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert len(bulwark_snapshots(vc, vm)) == 2
    statuses = [p["status"] for p in restore_points(client, admin, policy_id=policy["id"])]
    assert statuses.count("available") == 2 and statuses.count("expired") == 3
    assert by_job(restore_points(client, admin))[latest["id"]]["status"] == "available"


def test_revert_to_a_restore_point(client, admin, estate, runtime, worker, vc):
    policy = make_policy(
        client, admin, "keep 3", target(estate, "EXCH-MBX01", "DB01"), keep_on_primary=3
    )
    first = backup_now(client, admin, runtime, worker, policy["id"])[0]
    backup_now(client, admin, runtime, worker, policy["id"])
    point = by_job(restore_points(client, admin))[first["id"]]
    vm = estate.vm("EXCH-MBX01")
    current = next(s for s in vsphere.list_snapshots(vc, vm) if s.is_current)
    assert current.moref != point["copies"][0]["reference"]

    # Without the server's name typed in, nothing starts.
    unconfirmed = {"kind": "restore", "restore_point_id": point["id"]}
    assert_problem(client.post("/api/v1/jobs", json=unconfirmed, headers=admin), 422, "confirm")
    wrong = {**unconfirmed, "params": {"confirm": "EXCH-MBX02"}}
    assert_problem(client.post("/api/v1/jobs", json=wrong, headers=admin), 422, "confirm")

    r = client.post(
        "/api/v1/jobs", json={**unconfirmed, "params": {"confirm": "EXCH-MBX01"}}, headers=admin
    )
    assert r.status_code == 202, r.text
    restore = r.json()
    assert run_jobs(worker) == [restore["id"]]
    done = job(client, admin, restore["id"])
    assert done["state"] == "succeeded", done["error"]

    current = next(s for s in vsphere.list_snapshots(vc, vm) if s.is_current)
    assert current.moref == point["copies"][0]["reference"]
    assert current.name == f"bulwark-job-{first['id']}"
    audit = client.get("/api/v1/audit-events?action=restore.revert", headers=admin).json()
    assert audit["total"] == 1
    entry = audit["items"][0]
    assert entry["object_type"] == "restore_point" and entry["object_id"] == str(point["id"])
    assert entry["actor"].startswith("user-admin")  # who asked for it, not the worker
    assert entry["detail"]["server"] == "EXCH-MBX01"
    assert entry["detail"]["job"] == restore["id"]


def test_the_scheduler_runs_an_rpo_policy(client, admin, estate, runtime, worker, vc):
    policy = make_policy(
        client,
        admin,
        "RPO 15",
        target(estate, "EXCH-MBX01", "DB01") + target(estate, "EXCH-MBX03", "DB03"),
        consistency="cold",
        rpo_minutes=15,
        keep_on_primary=2,
    )
    scheduler = Scheduler(runtime.db)
    # Ticks at times in the past, so that the jobs they make are due for the worker now.
    start = utcnow() - timedelta(minutes=16)
    created = scheduler.tick(start)
    assert len(created) == 2  # one job per target
    assert sorted(run_jobs(worker)) == sorted(created)
    for job_id in created:
        done = job(client, admin, job_id)
        assert done["state"] == "succeeded", done["error"]
        assert done["created_by"] == "scheduler"
    assert len(restore_points(client, admin, policy_id=policy["id"])) == 2

    assert scheduler.tick(start + timedelta(minutes=5)) == []  # not due yet
    again = scheduler.tick(start + timedelta(minutes=16))
    assert len(again) == 2
    assert sorted(run_jobs(worker)) == sorted(again)
    assert len(restore_points(client, admin, policy_id=policy["id"])) == 4
    for server in ("EXCH-MBX01", "EXCH-MBX03"):
        assert len(bulwark_snapshots(vc, estate.vm(server))) == 2
        assert vsphere.power_state(vc, estate.vm(server)) == "poweredOn"
