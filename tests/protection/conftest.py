"""Fixtures for backups and restores that run for real: the API, the job engine and the lab.

Each test gets a lab of its own (half a second to start): backups change what the lab holds
(snapshots, power states, the stand-in guest's log), and job ids, which name Bulwark's
snapshots, start again at 1 on every SQLite test database.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.adapters import vsphere
from app.composition import load_handlers
from app.db.models import Job
from app.jobs import Worker
from app.jobs.handlers import registry as product_registry
from app.strategies.vm_snapshot import is_bulwark_snapshot
from tests.lab_fixture import Lab, LabUnavailable, must_have_lab, running_lab

# Fast engine timings for tests; failed attempts are retried at once (no backoff wait).
FAST = {
    "lease_seconds": 2.0,
    "heartbeat_interval": 0.2,
    "cancel_poll_interval": 0.05,
    "poll_interval": 0.05,
    "retry_base_s": 0.0,
    "shutdown_grace_s": 5.0,
}


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh lab for one test (overrides the session's shared one)."""
    try:
        with running_lab() as running:
            yield running
    except LabUnavailable as exc:
        if must_have_lab():
            pytest.fail(f"the vSphere lab is required in CI: {exc}")
        pytest.skip(f"vSphere lab unavailable (run 'make test' to build it): {exc}")


@pytest.fixture
def vc(lab: Lab) -> Iterator[vsphere.VSphereClient]:
    """The test's own session with the lab, to look at what the jobs did."""
    with vsphere.connect(
        lab.host, lab.port, lab.username, lab.password, trusted_thumbprint=lab.thumbprint
    ) as session:
        yield session


@dataclass
class Estate:
    """The lab vCenter as Bulwark knows it after a sync through the API."""

    lab: Lab
    connection_id: int
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def server(self, name: str) -> dict[str, Any]:
        return self.servers[name]

    def database(self, server: str, name: str) -> dict[str, Any]:
        return next(d for d in self.servers[server]["databases"] if d["name"] == name)

    def vm(self, server: str) -> str:
        return self.lab.exchange_vm(server)["moref"]


@pytest.fixture
def estate(client, admin, lab: Lab) -> Estate:
    body = {
        "name": "lab-vc",
        "kind": "vcenter",
        "host": lab.host,
        "port": lab.port,
        "username": lab.username,
        "password": lab.password,
        "trusted_thumbprint": lab.thumbprint,
        "guest_username": lab.estate["guest_username"],
        "guest_password": lab.estate["guest_password"],
    }
    r = client.post("/api/v1/connections", json=body, headers=admin)
    assert r.status_code == 201, r.text
    conn = r.json()
    assert conn["has_guest_secret"] is True
    r = client.post(f"/api/v1/connections/{conn['id']}/sync", headers=admin)
    assert r.status_code == 200, r.text
    servers = client.get("/api/v1/servers?limit=100", headers=admin).json()["items"]
    return Estate(lab, conn["id"], {s["name"]: s for s in servers})


@pytest.fixture
def runtime(app):
    return app.state.runtime


@pytest.fixture
def registry():
    """The product's handlers, as `bulwark worker` loads them."""
    load_handlers()
    return product_registry


@pytest.fixture
def make_worker(runtime, registry) -> Callable[..., Worker]:
    def _make(name: str = "worker-1", **options: Any) -> Worker:
        return Worker(runtime, name, ["vcenter"], registry=registry, **{**FAST, **options})

    return _make


@pytest.fixture
def worker(make_worker) -> Worker:
    return make_worker()


def run_jobs(worker: Worker, limit: int = 50) -> list[int]:
    """Run every job the worker can claim now, one after the other; their ids in order."""
    ran = []
    for _ in range(limit):
        job_id = worker.run_once()
        if job_id is None:
            return ran
        ran.append(job_id)
    raise AssertionError(f"more than {limit} jobs ran; is a job looping?")


def make_policy(client, admin, name: str, targets: list[dict], **fields: Any) -> dict:
    body = {
        "name": name,
        "method": "vmfs_snapshot",
        "consistency": "hot_application",
        "rpo_minutes": 60,
        "targets": targets,
        **fields,
    }
    r = client.post("/api/v1/policies", json=body, headers=admin)
    assert r.status_code == 201, r.text
    return r.json()


def start_backup(client, admin, policy_id: int) -> int:
    r = client.post("/api/v1/jobs", json={"kind": "backup", "policy_id": policy_id}, headers=admin)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def job(client, admin, job_id: int) -> dict:
    r = client.get(f"/api/v1/jobs/{job_id}", headers=admin)
    assert r.status_code == 200, r.text
    return r.json()


def children(runtime, parent_id: int) -> list[int]:
    """The per-target backup jobs a policy-wide run queued."""
    with runtime.db.session() as session:
        jobs = session.scalars(select(Job).where(Job.kind == "backup").order_by(Job.id)).all()
        return [j.id for j in jobs if j.parent_id == parent_id]


def backup_now(client, admin, runtime, worker: Worker, policy_id: int) -> list[dict]:
    """Start a policy-wide backup, run it and its per-target jobs; return those jobs."""
    parent = start_backup(client, admin, policy_id)
    run_jobs(worker)
    assert job(client, admin, parent)["state"] == "succeeded"
    return [job(client, admin, j) for j in children(runtime, parent)]


def restore_points(client, admin, **query: Any) -> list[dict]:
    r = client.get("/api/v1/restore-points", params={"limit": 100, **query}, headers=admin)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def bulwark_snapshots(vc, vm: str) -> list[vsphere.Snapshot]:
    return [s for s in vsphere.list_snapshots(vc, vm) if is_bulwark_snapshot(s.name)]


def guest_log(lab: Lab, vm: str | None = None) -> list[dict]:
    with open(lab.estate["guest_log"]) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return [line for line in lines if vm is None or line["vm"] == vm]


def wait_for_guest_log(lab: Lab, vm: str, count: int, timeout: float = 15.0) -> list[dict]:
    """The stand-in guest logs a process when it ends: wait for ``count`` lines of ``vm``."""
    deadline = time.monotonic() + timeout
    while True:
        lines = guest_log(lab, vm)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def utc(text: str) -> datetime:
    """A time from the guest log (RFC 3339, nanoseconds) as an aware datetime."""
    head, _, rest = text.rstrip("Z").partition(".")
    micros = (rest + "000000")[:6] if rest else "000000"
    return datetime.fromisoformat(f"{head}.{micros}+00:00")


def events(job_detail: dict) -> list[str]:
    return [e["message"] for e in job_detail["events"]]


def load_job(runtime, job_id: int) -> Job:
    with runtime.db.session() as session:
        row = session.scalar(select(Job).where(Job.id == job_id).options(selectinload(Job.events)))
        session.expunge_all()
        return row
