"""Jobs, the restore-point catalog, legal holds and compliance retention."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.db.models import RestorePoint, RestorePointCopy
from app.db.types import utcnow
from app.domain.protection import Consistency, CopyLocation, ProtectionMethod
from tests.api.conftest import assert_problem


@pytest.fixture
def server_id(client, admin) -> int:
    return client.post("/api/v1/servers", headers=admin, json={"name": "EXCH-1"}).json()["id"]


def _restore_point(app, server_id: int, **over) -> int:
    """A catalog entry as a backup job writes it (jobs arrive with the job engine)."""
    with app.state.runtime.db.session() as session:
        point = RestorePoint(
            server_id=server_id,
            method=ProtectionMethod.VMFS_SNAPSHOT,
            consistency=Consistency.HOT_CRASH_SCRIPTED,
            capabilities=["whole_database"],
            size_bytes=1 << 30,
            **over,
        )
        point.copies = [
            RestorePointCopy(location=CopyLocation.VM_SNAPSHOT, reference="snapshot-101")
        ]
        session.add(point)
        session.flush()
        return point.id


def test_jobs_are_queued_listed_and_cancelled(client, admin, server_id):
    repo = client.post(
        "/api/v1/connections", json={"name": "r", "kind": "repository"}, headers=admin
    ).json()["id"]
    pid = client.post(
        "/api/v1/policies",
        headers=admin,
        json={
            "name": "p",
            "method": "vm_image",
            "consistency": "crash",
            "rpo_minutes": 60,
            "repository_id": repo,
            "targets": [{"server_id": server_id}],
        },
    ).json()["id"]
    r = client.post("/api/v1/jobs", json={"kind": "backup", "policy_id": pid}, headers=admin)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "queued" and job["created_by"].startswith("user-admin")
    listed = client.get("/api/v1/jobs?state=queued&kind=backup", headers=admin).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    r = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=admin)
    assert r.json()["state"] == "cancelled"
    assert_problem(
        client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=admin), 409, "already cancelled"
    )
    detail = client.get(f"/api/v1/jobs/{job['id']}", headers=admin).json()
    assert detail["events"] == []


def test_job_input_is_checked(client, admin):
    assert_problem(
        client.post("/api/v1/jobs", json={"kind": "backup"}, headers=admin), 422, "policy_id"
    )
    assert_problem(
        client.post(
            "/api/v1/jobs", json={"kind": "restore", "restore_point_id": 77}, headers=admin
        ),
        422,
        "does not exist",
    )
    assert_problem(
        client.post("/api/v1/jobs", json={"kind": "sync"}, headers=admin), 422, "vCenter"
    )
    assert_problem(client.post("/api/v1/jobs", json={"kind": "reboot"}, headers=admin), 422)
    assert_problem(client.get("/api/v1/jobs/999", headers=admin), 404)


def test_restore_point_listing_and_filters(app, client, admin, server_id):
    old = _restore_point(app, server_id, captured_at=utcnow() - timedelta(days=3))
    new = _restore_point(app, server_id)
    page = client.get(f"/api/v1/restore-points?server_id={server_id}", headers=admin).json()
    assert [p["id"] for p in page["items"]] == [new, old]  # newest first
    assert page["items"][0]["copies"][0]["location"] == "vm_snapshot"
    since = (utcnow() - timedelta(days=1)).isoformat()
    recent = client.get("/api/v1/restore-points", params={"since": since}, headers=admin).json()
    assert [p["id"] for p in recent["items"]] == [new]


def test_legal_hold_blocks_removal_until_released(app, client, admin, server_id):
    point = _restore_point(app, server_id)
    hold = client.post(
        "/api/v1/legal-holds",
        headers=admin,
        json={
            "name": "case-2026-17",
            "reason": "records request",
            "scope": "server",
            "server_id": server_id,
        },
    ).json()
    assert client.get(f"/api/v1/restore-points/{point}", headers=admin).json()["on_hold"]
    assert_problem(
        client.delete(f"/api/v1/restore-points/{point}", headers=admin), 409, "legal hold"
    )
    r = client.post(f"/api/v1/legal-holds/{hold['id']}/release", headers=admin)
    assert r.status_code == 200 and r.json()["released_by"].startswith("user-admin")
    assert_problem(client.post(f"/api/v1/legal-holds/{hold['id']}/release", headers=admin), 409)
    assert client.delete(f"/api/v1/restore-points/{point}", headers=admin).status_code == 204
    assert (
        client.get(f"/api/v1/restore-points/{point}", headers=admin).json()["status"] == "expired"
    )


def test_compliance_retention_blocks_removal(app, client, admin, server_id):
    point = _restore_point(app, server_id, retain_until=utcnow() + timedelta(days=2555))
    assert_problem(
        client.delete(f"/api/v1/restore-points/{point}", headers=admin), 409, "compliance retention"
    )
    refused = client.get(
        "/api/v1/audit-events?action=restore_point.delete&outcome=refused", headers=admin
    ).json()
    assert refused["total"] == 1


def test_hold_input_is_checked(client, admin):
    assert_problem(
        client.post(
            "/api/v1/legal-holds",
            headers=admin,
            json={"name": "h", "reason": "r", "scope": "server"},
        ),
        422,
        "server_id",
    )
    assert_problem(
        client.post(
            "/api/v1/legal-holds",
            headers=admin,
            json={"name": "h", "reason": "r", "scope": "server", "server_id": 999},
        ),
        422,
        "does not exist",
    )
    assert_problem(
        client.post(
            "/api/v1/legal-holds",
            headers=admin,
            json={"name": "h", "reason": "r", "scope": "planet"},
        ),
        422,
    )


def test_failed_jobs_can_be_retried_as_new_jobs(app, client, admin, server_id):
    from app.db.models import Job
    from app.domain.jobs import JobKind, JobState

    with app.state.runtime.db.session() as session:
        failed = Job(
            kind=JobKind.BACKUP,
            server_id=server_id,
            state=JobState.FAILED,
            params={"resources": ["host:host-1"]},
            required_capabilities=["vcenter"],
            leftovers=[{"kind": "vm_snapshot", "vm": "vm-1", "name": "bulwark-job-9"}],
        )
        running = Job(kind=JobKind.BACKUP, server_id=server_id, state=JobState.RUNNING)
        session.add_all([failed, running])
        session.flush()
        ids = failed.id, running.id
    r = client.post(f"/api/v1/jobs/{ids[0]}/retry", headers=admin)
    assert r.status_code == 202, r.text
    again = r.json()
    assert again["id"] != ids[0] and again["state"] == "queued"
    assert again["params"]["retry_of"] == ids[0]
    assert again["required_capabilities"] == ["vcenter"]
    with app.state.runtime.db.session() as session:
        # The leftovers move to the new job, whose first attempt cleans them up.
        assert session.get(Job, again["id"]).leftovers[0]["name"] == "bulwark-job-9"
        assert session.get(Job, ids[0]).leftovers == []
    assert_problem(client.post(f"/api/v1/jobs/{ids[1]}/retry", headers=admin), 409, "running")


def test_a_confirmed_restore_is_not_retried_with_its_old_confirm(app, client, admin, server_id):
    from app.db.models import Job
    from app.domain.jobs import JobKind, JobState

    with app.state.runtime.db.session() as session:
        failed = Job(
            kind=JobKind.RESTORE,
            server_id=server_id,
            state=JobState.FAILED,
            params={"restore_point_id": 1, "mode": "revert", "confirm": "EXCH-MBX01"},
        )
        session.add(failed)
        session.flush()
        job_id = failed.id
    r = client.post(f"/api/v1/jobs/{job_id}/retry", headers=admin)
    assert_problem(r, 409, "confirm again")


def test_restore_needs_confirmation_and_a_snapshot_to_revert_to(app, client, admin, server_id):
    point = _restore_point(app, server_id)
    body = {"kind": "restore", "restore_point_id": point}
    assert_problem(client.post("/api/v1/jobs", json=body, headers=admin), 422, "EXCH-1")
    r = client.post("/api/v1/jobs", json={**body, "params": {"confirm": "EXCH-1"}}, headers=admin)
    assert r.status_code == 202 and r.json()["server_id"] == server_id
    assert r.json()["params"]["requested_by"].startswith("user-admin")
    with app.state.runtime.db.session() as session:
        for copy in session.get(RestorePoint, point).copies:
            copy.removed_at = utcnow()
    r = client.post("/api/v1/jobs", json={**body, "params": {"confirm": "EXCH-1"}}, headers=admin)
    assert_problem(r, 422, "no VM snapshot left")
    detail = client.get(f"/api/v1/restore-points/{point}", headers=admin).json()
    assert "details" in detail
