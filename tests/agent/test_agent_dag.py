"""DAG copies: reported by the agents, one backup per database per run across the DAG, from
a healthy passive copy by preference, falling back to the active one."""

from __future__ import annotations

import time

from app.agent import standin
from tests.agent.conftest import agent_policy, make_guest, points_of


def _children(service, parent_id: int) -> list[dict]:
    service.wait_job(parent_id)
    return service.ok("GET", f"/api/v1/jobs/{parent_id}")["children"]


def test_backups_come_from_the_passive_copy_then_fall_back_to_the_active(service, tmp_path):
    dag = tmp_path / "DAG1"
    active = make_guest(service, tmp_path, "EXCH-D1", dag=dag)
    passive = make_guest(service, tmp_path, "EXCH-D2", databases=(), dag=dag)
    copy = standin.add_passive_copy(active.store(), passive.root)
    db = service.ok(
        "POST",
        f"/api/v1/servers/{passive.server_id}/databases",
        json={"name": "DB1", "layout": "vmdk"},
    )
    passive.database_ids["DB1"] = db["id"]
    standin.Writer(active.store(), seed=6, flush_every=100).transactions(900)
    standin.replicate(active.store(), copy)
    active.start_agent()
    passive.start_agent()
    try:
        status = service.ok("GET", f"/api/v1/servers/{active.server_id}/agent")
        [entry] = status["databases"]
        assert entry["dag"] == "DAG1"
        assert {(c["server"], c["active"]) for c in entry["copies"]} == {
            ("EXCH-D1", True),
            ("EXCH-D2", False),
        }
        # Snapshot methods on a DAG member: the advisor warns about failover during the stun.
        advice = service.ok("GET", f"/api/v1/servers/{active.server_id}/advice")
        options = {o["method"]: o for o in advice["databases"][0]["options"]}
        assert options["agent_stream"]["applies"] and not options["agent_stream"]["warnings"]
        [warning] = options["vmfs_snapshot"]["warnings"]
        for name in ("SameSubnetDelay", "SameSubnetThreshold", "CrossSubnetDelay"):
            assert name in warning
        assert "DAG DAG1" in warning

        policy = agent_policy(service, active, "agent-dag")
        service.ok(
            "PATCH",
            f"/api/v1/policies/{policy}",
            json={
                "targets": [
                    {"server_id": active.server_id, "database_id": active.database_ids["DB1"]},
                    {"server_id": passive.server_id, "database_id": db["id"]},
                ]
            },
        )
        run = service.ok("POST", "/api/v1/jobs", json={"kind": "backup", "policy_id": policy})
        children = _children(service, run["id"])
        assert len(children) == 1  # one backup of DB1 for the whole DAG
        job = service.wait_job(children[0]["id"])
        assert job["state"] == "succeeded", job
        [first] = points_of(service, policy)
        assert first["details"]["source_server"] == "EXCH-D2"

        standin.set_failed(copy)
        time.sleep(2.5)  # the agents' next heartbeats report the failed copy
        standin.Writer(active.store(), seed=8, flush_every=100).transactions(300)
        run = service.ok("POST", "/api/v1/jobs", json={"kind": "backup", "policy_id": policy})
        job = service.wait_job(_children(service, run["id"])[0]["id"])
        # The failed copy has not replayed the new logs: Exchange keeps them, and says so.
        assert job["state"] == "partially_succeeded", job
        assert "Exchange kept its logs" in job["result"]["message"]
        second = points_of(service, policy)[-1]
        assert second["details"]["source_server"] == "EXCH-D1"
        events = service.ok("GET", f"/api/v1/jobs/{job['id']}")["events"]
        assert any("no healthy passive copy" in e["message"] for e in events)

        service.ok("PATCH", f"/api/v1/policies/{policy}", json={"dag_source": "passive"})
        run = service.ok("POST", "/api/v1/jobs", json={"kind": "backup", "policy_id": policy})
        job = service.wait_job(_children(service, run["id"])[0]["id"])
        assert job["state"] == "failed" and "no copy of DB1 in DAG DAG1" in job["error"]
    finally:
        active.stop_agent()
        passive.stop_agent()
