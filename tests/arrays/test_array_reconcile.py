"""An array snapshot deleted on the array (its own retention, an administrator) is found gone
at the next inventory sync: the restore point keeps its repository copy and loses instant
recovery, which needed the snapshot."""

from __future__ import annotations

import pytest

from tests.arrays.conftest import ArraySetup
from tests.arrays.test_array_flow import backup, make_policy
from tests.protection.conftest import restore_points
from tests.protection.test_reconcile import age_copies

pytestmark = pytest.mark.lab


def test_an_array_snapshot_deleted_on_the_array_is_found_gone(
    client, admin, estate, runtime, array_worker, array_estate: ArraySetup
):
    policy = make_policy(client, admin, estate, array_estate, "DB02 hourly")
    done = backup(client, admin, runtime, array_worker, policy["id"])
    assert done["state"] == "succeeded", done["error"]
    (point,) = restore_points(client, admin)
    assert "instant_recovery" in point["capabilities"]
    snap = next(c for c in point["copies"] if c["location"] == "array_snapshot")
    age_copies(runtime)

    array_estate.array.delete_snapshot(snap["reference"])
    r = client.post(f"/api/v1/connections/{estate.connection_id}/sync", headers=admin)
    assert r.status_code == 200, r.text
    (line,) = r.json()["copies_gone"]
    assert snap["reference"] in line and "unavailable" not in line

    (after,) = restore_points(client, admin)
    assert after["status"] == "available"  # the repository copy is still there
    assert "instant_recovery" not in after["capabilities"]
    assert "whole_database" in after["capabilities"]
    gone = next(c for c in after["copies"] if c["location"] == "array_snapshot")
    assert "not listed by array 'lab-array'" in gone["gone_reason"]
    kept = next(c for c in after["copies"] if c["location"] == "repository")
    assert kept["gone_at"] is None and kept["removed_at"] is None
