"""Against the lab: a changed certificate and a snapshot deleted outside Bulwark fail a job
at once, saying why and where to fix it, instead of retrying into the same answer."""

from __future__ import annotations

import pytest

from app.adapters import vsphere
from app.db.models import Connection
from tests.protection.conftest import (
    backup_now,
    children,
    job,
    make_policy,
    restore_points,
    run_jobs,
    start_backup,
)
from tests.protection.test_backup_flow import target

pytestmark = pytest.mark.lab


def test_a_changed_certificate_fails_the_backup_at_once_with_the_trust_page(
    client, admin, estate, runtime, worker
):
    policy = make_policy(client, admin, "DB01", target(estate, "EXCH-MBX01", "DB01"))
    # vCenter's certificate is no longer the one trusted (renewed, or someone in between):
    # as if the pinned fingerprint were another certificate's.
    with runtime.db.session() as session:
        conn = session.get(Connection, estate.connection_id)
        conn.trusted_thumbprint = ":".join(["AB"] * 32)
    parent = start_backup(client, admin, policy["id"])
    run_jobs(worker)
    (child,) = (job(client, admin, j) for j in children(runtime, parent))
    assert (child["state"], child["attempts"]) == ("failed", 1), child["error"]
    assert "certificate" in child["error"] and "lab-vc" in child["error"]
    assert child["result"] == {"fix": f"/connections/{estate.connection_id}/trust"}


def test_a_revert_to_a_snapshot_deleted_since_the_sync_fails_at_once(
    client, admin, estate, runtime, worker, vc
):
    policy = make_policy(
        client, admin, "keep 2", target(estate, "EXCH-MBX01", "DB01"), keep_on_primary=2
    )
    backup_now(client, admin, runtime, worker, policy["id"])
    (point,) = restore_points(client, admin)
    vsphere.remove_snapshot(vc, point["copies"][0]["reference"])
    ask = {"kind": "restore", "restore_point_id": point["id"], "params": {"confirm": "EXCH-MBX01"}}
    r = client.post("/api/v1/jobs", json=ask, headers=admin)
    assert r.status_code == 202, r.text
    run_jobs(worker)
    done = job(client, admin, r.json()["id"])
    assert (done["state"], done["attempts"]) == ("failed", 1), done["error"]
    assert "is gone" in done["error"]
    # The catalog learnt it there and then: the point offers nothing any more.
    (after,) = restore_points(client, admin)
    assert after["status"] == "unavailable"
    assert after["copies"][0]["gone_reason"].startswith(f"revert job {done['id']}: ")
