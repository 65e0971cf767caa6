"""What must never truncate: a killed agent, a damaged page, a missing log; what breaks an
incremental chain (circular logging); and an agent credential that opens nothing else."""

from __future__ import annotations

import json
import re
import signal
import time

import httpx

from app.agent import standin
from tests.agent.conftest import (
    DroppingProxy,
    agent_policy,
    enroll_guest,
    make_guest,
    points_of,
    read_json,
    run_backup,
)


def _generations(guest) -> list[int]:
    return guest.store().generations()


def test_killed_agent_leaves_no_point_and_no_truncation_then_the_next_run_completes(
    service, tmp_path
):
    guest = make_guest(service, tmp_path, "EXCH-K1", pages=6000)
    standin.Writer(guest.store(), seed=5, flush_every=100).transactions(900)
    guest.start_agent()
    policy = agent_policy(service, guest, "agent-k1")
    before = _generations(guest)
    job_id = run_backup(service, guest, policy)
    deadline = time.monotonic() + 120
    while service.ok("GET", f"/api/v1/jobs/{job_id}")["bytes_done"] == 0:
        assert time.monotonic() < deadline, "the stream never started"
        time.sleep(0.05)
    guest.stop_agent(signal.SIGKILL)  # mid-stream
    job = service.wait_job(job_id)
    assert job["state"] == "failed" and "stopped answering" in job["error"]
    assert points_of(service, policy) == []
    # The snapshot's log roll added a generation; nothing was truncated.
    assert _generations(guest)[0] == before[0]

    guest.start_agent()
    try:
        job = service.wait_job(run_backup(service, guest, policy), timeout=300)
        assert job["state"] == "succeeded", job
        [point] = points_of(service, policy)
        blocks = sum(len([b for b in json.loads(json.dumps(g)) if b]) for g in [point["details"]])
        assert blocks >= 0
        # What arrived before the kill was not sent again.
        total = -(-6000 * 8192 // (64 * 1024))
        assert job["result"]["details"]["sent_chunks"] < total
        assert _generations(guest)[0] > before[0]  # truncated this time
    finally:
        guest.stop_agent()


def test_damaged_page_or_missing_log_fails_the_check_and_truncates_nothing(service, tmp_path):
    guest = make_guest(service, tmp_path, "EXCH-C1")
    store = guest.store()
    writer = standin.Writer(store, seed=9, flush_every=10**9)  # the checkpoint stays at 1
    writer.transactions(1500)
    guest.start_agent()
    try:
        policy = agent_policy(service, guest, "agent-c1")
        gens = _generations(guest)
        assert len(gens) >= 4
        missing = gens[2]
        saved = (store.logs / standin.log_name(missing)).read_bytes()
        (store.logs / standin.log_name(missing)).unlink()
        job = service.wait_job(run_backup(service, guest, policy))
        assert job["state"] == "failed"
        assert f"log generation {missing} is missing" in job["error"]
        assert _generations(guest)[0] == gens[0]
        (store.logs / standin.log_name(missing)).write_bytes(saved)

        with open(store.edb, "r+b") as fh:  # one flipped byte in page 37, checksum not fixed
            fh.seek(37 * store.page_size + 1000)
            byte = fh.read(1)
            fh.seek(37 * store.page_size + 1000)
            fh.write(bytes([byte[0] ^ 0xFF]))
        job = service.wait_job(run_backup(service, guest, policy))
        assert job["state"] == "failed" and "database page 37 is damaged" in job["error"]
        assert points_of(service, policy) == []
        assert _generations(guest)[0] == gens[0]
    finally:
        guest.stop_agent()


def test_circular_logging_makes_the_next_backup_a_full_and_says_why(service, tmp_path):
    guest = make_guest(service, tmp_path, "EXCH-L1")
    store = guest.store()
    standin.Writer(store, seed=2, flush_every=100).transactions(600)
    guest.start_agent()
    try:
        policy = agent_policy(service, guest, "agent-l1")
        assert service.wait_job(run_backup(service, guest, policy))["state"] == "succeeded"
        meta = read_json(store.path / "db.json")
        meta["circular_logging"] = True
        (store.path / "db.json").write_text(json.dumps(meta))
        standin.Writer(store, seed=4, flush_every=100).transactions(600)
        job = service.wait_job(run_backup(service, guest, policy))
        assert job["state"] == "partially_succeeded" or job["state"] == "succeeded", job
        first, second = points_of(service, policy)
        assert second["details"]["level"] == "full"
        assert "circular logging" in second["details"]["full_because"]
        assert second["details"]["chain"] != first["details"]["chain"]
    finally:
        guest.stop_agent()


def test_an_agent_credential_opens_only_the_agents_routes_of_its_own_server(service, tmp_path):
    mine = make_guest(service, tmp_path, "EXCH-S1")
    other = make_guest(service, tmp_path, "EXCH-S2")
    credential = read_json(mine.config)["credential"]
    agent = httpx.Client(
        base_url=service.url,
        verify=False,
        headers={"Authorization": f"Bearer {credential}"},
        timeout=30,
    )
    spec = service.ok("GET", "/api/v1/openapi.json")
    checked = 0
    for path, operations in spec["paths"].items():
        if path.startswith("/api/v1/agent"):
            continue
        concrete = re.sub(r"\{[^}]+\}", "1", path)
        for method in operations:
            anonymous = httpx.request(method.upper(), service.url + concrete, json={}, verify=False)
            if anonymous.status_code not in (401, 403):
                continue  # public (health, readiness): no credential needed at all
            r = agent.request(method.upper(), concrete, json={})
            assert r.status_code in (401, 403), f"{method} {path}: {r.status_code}"
            checked += 1
    assert checked > 50
    # The dashboard does not take it either.
    assert agent.get("/servers", follow_redirects=False).status_code in (302, 303, 401)
    # Another server's task is not there for this agent.
    policy = agent_policy(service, other, "agent-s2")
    job_id = run_backup(service, other, policy)  # queued for EXCH-S2, whose agent is not running
    deadline = time.monotonic() + 60
    while service.ok("GET", f"/api/v1/jobs/{job_id}")["state"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.0)  # the job has queued EXCH-S2's task by now
    assert agent.get("/api/v1/agent/work?wait=0").status_code == 204
    for task_id in range(1, 40):
        r = agent.post(f"/api/v1/agent/tasks/{task_id}/failed", json={"error": "x"})
        assert r.status_code == 404
    service.api("POST", f"/api/v1/jobs/{job_id}/cancel")  # it may have failed already
    agent.close()


def test_a_dropped_connection_resumes_without_sending_again_what_arrived(service, tmp_path):
    guest = make_guest(service, tmp_path, "EXCH-N1", pages=3000, enroll=False)
    port = int(service.url.rsplit(":", 1)[1])
    proxy = DroppingProxy(port, drop_after=8 * 1024 * 1024)  # mid-stream of ~24 MiB
    enroll_guest(guest, url=proxy.url)
    standin.Writer(guest.store(), seed=5, flush_every=100).transactions(300)
    guest.start_agent()
    try:
        policy = agent_policy(service, guest, "agent-n1")
        job = service.wait_job(run_backup(service, guest, policy), timeout=300)
        assert proxy.dropped
        assert job["state"] == "succeeded", job
        details = job["result"]["details"]
        [point] = points_of(service, policy)
        assert point["details"]["level"] == "full"
        block = 64 * 1024
        total = sum(-(-g // block) for g in [3000 * 8192])
        # At most the chunks in flight at the cut went twice (three upload connections).
        assert details["sent_chunks"] <= total + 3 + 10  # + logs and checkpoint
        assert details["bytes_sent"] <= (total + 3 + 10) * block
    finally:
        guest.stop_agent()
        proxy.close()
