"""Claiming: exclusive, capability-routed, one job per server, resource limits."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from app.db.models import Job
from app.db.session import Database
from app.db.types import utcnow
from app.domain.jobs import JobKind, JobState
from app.jobs.engine import ResourceLimits, resources_of
from tests.conftest import TEST_DB
from tests.jobs.conftest import add_job, add_jobs, load_job, make_engine

postgresql_only = pytest.mark.skipif(TEST_DB != "postgresql", reason="PostgreSQL row locks")


def _race(claimers, rounds_until_empty=True):
    """Each claimer claims until the queue is empty; returns ids per claimer."""
    barrier = threading.Barrier(len(claimers))
    got: dict[int, list[int]] = {i: [] for i in range(len(claimers))}
    errors: list[BaseException] = []

    def run(i, claim):
        try:
            barrier.wait()
            while True:
                job = claim()
                if job is None:
                    return
                got[i].append(job.id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return got


def test_racing_workers_claim_each_job_exactly_once(db):
    ids = add_jobs(db, 60)
    engine = make_engine(db)
    claimers = [lambda n=n: engine.claim(f"w{n}") for n in range(4)]
    got = _race(claimers)
    counts = Counter(i for ids_ in got.values() for i in ids_)
    assert sorted(counts) == ids and set(counts.values()) == {1}
    with db.session() as session:
        rows = session.execute(select(Job.id, Job.state, Job.worker_name, Job.attempts)).all()
    owner = {i: f"w{n}" for n, ids_ in got.items() for i in ids_}
    for row in rows:
        assert row.state == JobState.RUNNING and row.attempts == 1
        assert row.worker_name == owner[row.id]


def test_workers_on_separate_engines_claim_each_job_exactly_once(db, database_url):
    """Separate engines: separate connections and pools, as separate processes would have."""
    ids = add_jobs(db, 40)
    databases = [Database(database_url) for _ in range(3)]
    try:
        engines = [make_engine(d) for d in databases]
        got = _race([lambda e=e, n=n: e.claim(f"w{n}") for n, e in enumerate(engines)])
    finally:
        for d in databases:
            d.dispose()
    claimed = [i for ids_ in got.values() for i in ids_]
    assert sorted(claimed) == ids


@postgresql_only
def test_claim_skips_rows_locked_by_another_transaction(db):
    first, second = add_jobs(db, 2)
    engine = make_engine(db)
    with db.engine.connect() as other:
        other.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": first})
        # Without SKIP LOCKED this claim would wait for the other transaction to end.
        job = engine.claim("w1")
        assert job is not None and job.id == second
        assert engine.claim("w2") is None
        other.rollback()
    job = engine.claim("w2")
    assert job is not None and job.id == first


def test_only_due_jobs_of_known_kinds_are_claimed(db):
    engine = make_engine(db)
    later = add_job(db, not_before=utcnow() + timedelta(hours=1))
    sync = add_job(db, JobKind.SYNC)
    assert engine.claim("w", kinds=[JobKind.VERIFY]) is None
    assert engine.claim("w", kinds=[]) is None
    assert engine.claim("w", kinds=[JobKind.SYNC]).id == sync
    with db.session() as session:
        session.execute(update(Job).where(Job.id == later).values(not_before=utcnow()))
    assert engine.claim("w").id == later


def test_claim_records_the_attempt_and_the_lease(db):
    job_id = add_job(db, params={"x": 1}, max_attempts=2)
    engine = make_engine(db, lease_seconds=30)
    before = utcnow()
    job = engine.claim("w1")
    assert (job.id, job.attempt, job.max_attempts, job.params) == (job_id, 1, 2, {"x": 1})
    row = load_job(db, job_id)
    assert row.state == JobState.RUNNING and row.worker_name == "w1"
    assert before + timedelta(seconds=29) < row.lease_expires_at < utcnow() + timedelta(seconds=31)
    assert row.started_at is not None
    assert "attempt 1 of 2 on worker w1" in [e.message for e in row.events]


def test_jobs_go_only_to_workers_with_every_required_capability(db):
    engine = make_engine(db)
    plain = add_job(db)
    vcenter = add_job(db, required_capabilities=["vcenter"])
    array = add_job(db, required_capabilities=["array:btrfs-1"])
    both = add_job(db, required_capabilities=["vcenter", "array:btrfs-1"])

    def drain(caps):
        out = []
        while (job := engine.claim(f"w-{'-'.join(caps)}", caps)) is not None:
            out.append(job.id)
        return sorted(out)

    assert drain(["vcenter"]) == [plain, vcenter]
    assert drain(["array:btrfs-2"]) == []
    assert drain(["array:btrfs-1", "datastore:ds-1"]) == [array]
    assert drain(["vcenter", "array:btrfs-1"]) == [both]


def test_capability_check_scans_past_jobs_this_worker_cannot_do(db):
    engine = make_engine(db, claim_batch=3)
    add_jobs(db, 10, required_capabilities=["array:netapp"])
    mine = add_job(db, required_capabilities=["vcenter"])
    assert engine.claim("w", ["vcenter"]).id == mine


def test_one_running_job_per_exchange_server(db, servers):
    s1, s2, _ = servers
    engine = make_engine(db)
    a = add_job(db, server_id=s1)
    b = add_job(db, server_id=s1)
    c = add_job(db, server_id=s2)
    d = add_job(db)
    assert engine.claim("w1").id == a
    assert engine.claim("w2").id == c
    assert engine.claim("w3").id == d
    assert engine.claim("w4") is None  # b waits for a: same server
    assert engine.succeed(a, "w1")
    assert engine.claim("w4").id == b


def test_racing_claims_never_start_two_jobs_on_one_server(db, database_url, servers):
    add_jobs(db, 20, server_id=servers[0])
    databases = [Database(database_url) for _ in range(4)]
    try:
        # One candidate per query, so each racer locks a different row of the same server.
        engines = [make_engine(d, claim_batch=1) for d in databases]
        got = _race([lambda e=e, n=n: e.claim(f"w{n}") for n, e in enumerate(engines)])
    finally:
        for d in databases:
            d.dispose()
    assert sum(len(v) for v in got.values()) == 1


def test_resource_limits_per_resource_and_per_kind(db):
    engine = make_engine(db, limits={"datastore:ds-1": 2}, default_limits={"host": 1})
    ds1 = add_jobs(db, 3, resources=["datastore:ds-1"])
    ds2 = add_jobs(db, 3, resources=["datastore:ds-2"])  # no limit
    host = add_jobs(db, 2, resources=["host:host-9", "datastore:ds-3"])
    claimed = []
    while (job := engine.claim("w")) is not None:
        claimed.append(job.id)
    assert sorted(claimed) == sorted(ds1[:2] + ds2 + host[:1])
    engine.succeed(ds1[0], "w")
    assert engine.claim("w").id == ds1[2]
    engine.fail(host[0], "w", "boom", retry=False)
    assert engine.claim("w").id == host[1]


def test_racing_claims_respect_a_resource_limit(db, database_url):
    add_jobs(db, 20, resources=["datastore:ds-1"])
    databases = [Database(database_url) for _ in range(4)]
    try:
        engines = [make_engine(d, limits={"datastore:ds-1": 2}, claim_batch=1) for d in databases]
        got = _race([lambda e=e, n=n: e.claim(f"w{n}") for n, e in enumerate(engines)])
    finally:
        for d in databases:
            d.dispose()
    assert sum(len(v) for v in got.values()) == 2


def test_resource_helpers():
    assert resources_of(["host:h", "datastore:d", "host:h", 3]) == [
        "datastore:d",
        "host:h",
    ]
    assert resources_of([]) == [] and resources_of(None) == []
    limits = ResourceLimits({"datastore:ds-1": 1}, {"datastore": 3})
    assert limits.limit_for("datastore:ds-1") == 1
    assert limits.limit_for("datastore:ds-7") == 3
    assert limits.limit_for("host:h") is None


def test_backoff_doubles_and_is_capped(db):
    engine = make_engine(db, retry_base_s=30, retry_cap_s=300)
    assert [engine.backoff(n).total_seconds() for n in (1, 2, 3, 4, 5)] == [30, 60, 120, 240, 300]


def test_request_cancel_ends_queued_jobs_at_once_and_flags_running_ones(db):
    engine = make_engine(db)
    running = add_job(db)
    queued = add_job(db)
    assert engine.claim("w").id == running
    assert engine.request_cancel(queued) == JobState.CANCELLED
    assert engine.request_cancel(running) == JobState.RUNNING
    assert load_job(db, running).cancel_requested
    assert engine.claim("w") is None
    assert engine.request_cancel(queued) == JobState.CANCELLED
