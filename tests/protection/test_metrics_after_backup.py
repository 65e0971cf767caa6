"""/metrics after a real backup: what an alert rule on RPO reads (see docs/monitoring.md)."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from tests.protection.conftest import backup_now, make_policy, restore_points

pytestmark = pytest.mark.lab


def sample(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def test_metrics_carry_the_newest_restore_point_of_the_server_backed_up(
    client, admin, estate, runtime, worker
):
    server = estate.server("EXCH-MBX01")
    before = client.get("/metrics", headers=admin).text
    assert (
        sample(before, "bulwark_server_newest_restore_point_timestamp_seconds", server="EXCH-MBX01")
        is None
    )
    assert sample(before, "bulwark_server_protected", server="EXCH-MBX01") == 0

    target = {"server_id": server["id"], "database_id": estate.database("EXCH-MBX01", "DB01")["id"]}
    policy = make_policy(client, admin, "hourly", [target], rpo_minutes=90)
    (done,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert done["state"] == "succeeded", done["error"]
    (point,) = restore_points(client, admin, server_id=server["id"])

    text = client.get("/metrics", headers=admin).text
    newest = sample(
        text, "bulwark_server_newest_restore_point_timestamp_seconds", server="EXCH-MBX01"
    )
    assert newest == pytest.approx(datetime.fromisoformat(point["captured_at"]).timestamp(), abs=1)
    assert sample(text, "bulwark_server_rpo_objective_seconds", server="EXCH-MBX01") == 90 * 60
    assert sample(text, "bulwark_server_protected", server="EXCH-MBX01") == 1
    age = sample(text, "bulwark_server_restore_point_age_seconds", server="EXCH-MBX01")
    assert age is not None and 0 <= age < 600
    # Not verified yet, and other servers have no point.
    assert (
        sample(
            text,
            "bulwark_server_newest_verified_restore_point_timestamp_seconds",
            server="EXCH-MBX01",
        )
        is None
    )
    assert (
        sample(text, "bulwark_server_newest_restore_point_timestamp_seconds", server="EXCH-MBX02")
        is None
    )
    assert sample(text, "bulwark_jobs", kind="backup", state="succeeded") >= 1
    assert sample(text, "bulwark_job_duration_seconds_count", kind="backup", state="succeeded") >= 1
    assert sample(text, "bulwark_proxy_last_heartbeat_timestamp_seconds", proxy=worker.name)
