"""Full and incremental backups through a real agent and a real service, and truncation
only once the restore point is durable."""

from __future__ import annotations

import time

from tests.agent.conftest import agent_policy, make_guest, points_of, run_backup


def test_full_then_incremental_while_exchange_keeps_writing(service, tmp_path):
    guest = make_guest(service, tmp_path, "EXCH-A1")
    guest.start_agent()
    try:
        status = service.ok("GET", f"/api/v1/servers/{guest.server_id}/agent")
        assert status["enrolled"] and status["online"] and status["version"]
        policy = agent_policy(service, guest, "agent-a1")
        guest.start_writer()
        time.sleep(1.0)
        job = service.wait_job(run_backup(service, guest, policy))
        assert job["state"] == "succeeded", job
        [full] = points_of(service, policy)
        d = full["details"]
        assert d["level"] == "full" and d["check"]["pages_checked"] == 512
        trunc = d["truncation"]
        assert trunc["truncated"]
        # Logs older than the backup's checkpoint went; the rest stayed.
        lo_after = trunc["generations_after"][0]
        assert lo_after == d["checkpoint_generation"]
        assert trunc["generations_before"][0] < lo_after

        time.sleep(1.0)
        job = service.wait_job(run_backup(service, guest, policy))
        assert job["state"] == "succeeded", job
        full_pt, incr = points_of(service, policy)
        di = incr["details"]
        assert di["level"] == "incremental" and di["chain"] == d["chain"]
        assert di["base_point"] == full_pt["id"]
        assert di["log_range"][0] == d["log_range"][1] + 1
        assert set(di["manifests"]) == {"logs", "checkpoint"}  # no database file
    finally:
        guest.stop_writers()
        guest.stop_agent()
