"""The catalog tells the truth: a snapshot deleted outside Bulwark is found gone at the next
inventory sync (when and how), the restore point loses what it allowed, a point left with no
copy is unavailable and the operator is told; against the lab."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.adapters import vsphere
from app.db.models import RestorePointCopy
from app.db.types import utcnow
from app.notifications import Notifier
from tests.api.conftest import assert_problem
from tests.protection.conftest import backup_now, make_policy, restore_points, run_jobs
from tests.protection.test_backup_flow import target
from tests.test_notifications import allow_loopback_webhooks, webhook  # noqa: F401

pytestmark = pytest.mark.lab


def age_copies(runtime, minutes: int = 5) -> None:
    """The snapshots were taken a while before the sync (a copy younger than the read may be
    missing from it without being gone, and is not judged)."""
    with runtime.db.session() as session:
        session.execute(
            update(RestorePointCopy).values(created_at=utcnow() - timedelta(minutes=minutes))
        )


def test_a_snapshot_deleted_in_vcenter_is_found_gone_at_the_next_sync(
    app,
    client,
    admin,
    estate,
    runtime,
    worker,
    vc,
    settings,
    webhook,  # noqa: F811
):
    url, hooks = webhook
    allow_loopback_webhooks(client, admin)
    policy = make_policy(
        client,
        admin,
        "keep 3",
        target(estate, "EXCH-MBX01", "DB01"),
        keep_on_primary=3,
        notify_webhook_url=url,
    )
    first, second = (backup_now(client, admin, runtime, worker, policy["id"])[0] for _ in "ab")
    points = {p["job_id"]: p for p in restore_points(client, admin)}
    doomed, kept = points[first["id"]], points[second["id"]]
    assert doomed["status"] == "available" and doomed["capabilities"]
    age_copies(runtime)

    # An operator deletes the snapshot in the vSphere client.
    vsphere.remove_snapshot(vc, doomed["copies"][0]["reference"])
    r = client.post(f"/api/v1/connections/{estate.connection_id}/sync", headers=admin)
    assert r.status_code == 200, r.text
    (line,) = r.json()["copies_gone"]
    assert f"restore point {doomed['id']}" in line and "unavailable" in line

    after = {p["id"]: p for p in restore_points(client, admin)}
    gone = after[doomed["id"]]
    assert gone["status"] == "unavailable" and gone["capabilities"] == []
    (copy,) = gone["copies"]
    assert copy["gone_at"] is not None and copy["removed_at"] is not None
    assert "not in vCenter 'lab-vc' at the inventory sync" in copy["gone_reason"]
    assert after[kept["id"]]["status"] == "available"  # its snapshot is still there
    assert after[kept["id"]]["copies"][0]["gone_at"] is None

    # A revert to it is refused at once, saying why; not retried for 90 s.
    ask = {"kind": "restore", "restore_point_id": gone["id"], "params": {"confirm": "EXCH-MBX01"}}
    assert_problem(client.post("/api/v1/jobs", json=ask, headers=admin), 422)

    # The operator is told once.
    notifier = Notifier(settings, runtime.secrets)
    with runtime.db.session() as session:
        assert notifier.sweep(session, utcnow()) == 1
    (body,) = [json.loads(b) for _, b in hooks]
    assert body["event"] == "restore_point.unavailable"
    assert body["restore_point_id"] == gone["id"] and "every copy is gone" in body["text"]
    with runtime.db.session() as session:
        assert notifier.sweep(session, utcnow()) == 0

    # Found once: the next sync has nothing new to say; the audit log has when and how.
    r = client.post(f"/api/v1/connections/{estate.connection_id}/sync", headers=admin)
    assert r.json()["copies_gone"] == []
    audit = client.get("/api/v1/audit-events?action=restore_point.copy_gone", headers=admin)
    (entry,) = audit.json()["items"]
    assert entry["object_id"] == str(gone["id"]) and entry["detail"]["unavailable"] is True


def test_a_snapshot_taken_after_the_read_is_not_judged_by_it(
    client, admin, estate, runtime, worker, vc
):
    policy = make_policy(
        client, admin, "keep 3", target(estate, "EXCH-MBX01", "DB01"), keep_on_primary=3
    )
    backup_now(client, admin, runtime, worker, policy["id"])
    (point,) = restore_points(client, admin)
    vsphere.remove_snapshot(vc, point["copies"][0]["reference"])
    # Catalogued moments ago: a read that began before it would not hold it either.
    r = client.post(f"/api/v1/connections/{estate.connection_id}/sync", headers=admin)
    assert r.json()["copies_gone"] == []
    assert restore_points(client, admin)[0]["status"] == "available"
    age_copies(runtime)
    # The sync job finds it, as the scheduler's syncs do.
    r = client.post(
        "/api/v1/jobs", json={"kind": "sync", "connection_id": estate.connection_id}, headers=admin
    )
    assert r.status_code == 202, r.text
    run_jobs(worker)
    detail = client.get(f"/api/v1/jobs/{r.json()['id']}", headers=admin).json()
    assert detail["state"] == "succeeded", detail["error"]
    assert any("is gone" in e["message"] for e in detail["events"])
    assert restore_points(client, admin)[0]["status"] == "unavailable"
