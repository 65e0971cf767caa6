"""Exchange log truncation after snapshot backups (policy ``truncate_logs``): it runs in the
guest only after the snapshot exists and the restore point is cataloged; ``require`` fails
the job when it fails (the point stays), ``off`` runs nothing."""

from __future__ import annotations

import pytest

from tests.protection.conftest import (
    backup_now,
    bulwark_snapshots,
    guest_log,
    make_policy,
    restore_points,
    utc,
)
from tests.protection.test_backup_flow import point_details, target

pytestmark = pytest.mark.lab


def test_truncation_runs_after_the_snapshot_and_the_catalog(
    client, admin, estate, runtime, worker, vc
):
    policy = make_policy(
        client,
        admin,
        "DB01 truncating",
        target(estate, "EXCH-MBX01", "DB01"),
        truncate_logs="try",
    )
    (done,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert done["state"] == "succeeded", done["error"]
    vm = estate.vm("EXCH-MBX01")
    (snap,) = bulwark_snapshots(vc, vm)
    (truncation,) = guest_log(estate.lab, vm)
    assert "diskshadow" in truncation["arguments"] and "end backup" in truncation["arguments"]
    assert "Get-MailboxDatabase 'DB01'" in truncation["arguments"]
    assert snap.created <= utc(truncation["started"])
    (point,) = restore_points(client, admin, policy_id=policy["id"])
    details = point_details(runtime, point["id"])
    assert details["truncation"] == {
        "via": "guest",
        "mode": "try",
        "exit_code": 0,
        "truncated": True,
    }


def test_required_truncation_that_fails_fails_the_job_and_keeps_the_point(
    client, admin, estate, runtime, worker
):
    server = estate.server("EXCH-MBX01")
    db01 = estate.database("EXCH-MBX01", "DB01")
    # The stand-in guest exits with N for a command holding "exit N": a database name does.
    r = client.post(
        f"/api/v1/servers/{server['id']}/databases",
        headers=admin,
        json={"name": "DB09 exit 5", "database_disk_key": db01["database_disk_key"]},
    )
    assert r.status_code == 201, r.text
    policy = make_policy(
        client,
        admin,
        "DB09 must truncate",
        [{"server_id": server["id"], "database_id": r.json()["id"]}],
        truncate_logs="require",
    )
    (done,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert done["state"] == "failed"
    assert "logs were not truncated" in done["error"] and "restore point is kept" in done["error"]
    (point,) = restore_points(client, admin, policy_id=policy["id"])
    assert point_details(runtime, point["id"])["truncation"]["truncated"] is False


def test_off_runs_nothing_in_the_guest(client, admin, estate, runtime, worker):
    policy = make_policy(client, admin, "DB01 plain", target(estate, "EXCH-MBX01", "DB01"))
    (done,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert done["state"] == "succeeded", done["error"]
    assert guest_log(estate.lab, estate.vm("EXCH-MBX01")) == []
