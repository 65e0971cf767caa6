"""The scheduler: cron and RPO policies become backup jobs, once, with one catch-up."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from app.composition import load_handlers
from app.db.models import AuditEvent, ExchangeDatabase, Job, Policy, PolicyTarget
from app.db.session import Database
from app.domain.jobs import JobKind, JobState
from app.domain.protection import Consistency, DatabaseLayout, ProtectionMethod
from app.jobs.scheduler import Scheduler
from tests.jobs.conftest import messages

# What a backup or sync job needs comes from the handlers' registrations (as in the service).
load_handlers()

T0 = datetime(2030, 3, 4, 10, 30, tzinfo=UTC)  # a Monday, 10:30 UTC


def add_policy(db: Database, server_ids, name="daily", **fields) -> int:
    values = {
        "method": ProtectionMethod.VM_IMAGE,
        "consistency": Consistency.CRASH,
        "created_at": T0,
        **fields,
    }
    with db.session() as session:
        policy = Policy(name=name, **values)
        policy.targets = [PolicyTarget(server_id=s) for s in server_ids]
        session.add(policy)
        session.flush()
        return policy.id


def scheduled(db: Database, policy_id: int | None = None) -> list[Job]:
    with db.session() as session:
        query = select(Job).order_by(Job.id)
        if policy_id is not None:
            query = query.where(Job.policy_id == policy_id)
        jobs = list(session.scalars(query))
        session.expunge_all()
        return jobs


def finish_all(db: Database) -> None:
    with db.session() as session:
        session.execute(
            update(Job)
            .where(Job.state.in_((JobState.QUEUED, JobState.RUNNING)))
            .values(state=JobState.SUCCEEDED)
        )


def test_cron_policy_is_not_due_before_its_first_run_then_runs_once(db, servers):
    pid = add_policy(db, servers[:2], schedule_cron="0 2 * * *")
    scheduler = Scheduler(db)
    assert scheduler.tick(T0) == []
    assert scheduler.tick(T0.replace(hour=23, minute=59)) == []
    at = datetime(2030, 3, 5, 2, 0, tzinfo=UTC)
    created = scheduler.tick(at)
    assert len(created) == 2
    jobs = scheduled(db, pid)
    assert [(j.server_id, j.database_id) for j in jobs] == [(servers[0], None), (servers[1], None)]
    for job in jobs:
        assert job.kind == JobKind.BACKUP and job.state == JobState.QUEUED
        assert job.created_by == "scheduler"
        assert job.params["scheduled_for"] == "2030-03-05T02:00:00+00:00"
        # The protection layer's template adds what the method needs (no VM synced here).
        assert job.resources == [] and job.required_capabilities == ["vcenter"]
    assert scheduler.tick(at) == []
    assert scheduler.tick(at + timedelta(minutes=30)) == []
    with db.session() as session:
        audit = session.scalars(select(AuditEvent).where(AuditEvent.actor == "scheduler")).all()
    assert {a.object_id for a in audit} == {str(j.id) for j in jobs}


def test_next_cron_run_and_busy_targets(db, servers):
    pid = add_policy(db, servers[:1], schedule_cron="0 * * * *")
    scheduler = Scheduler(db)
    assert len(scheduler.tick(T0.replace(hour=11, minute=0))) == 1
    # Previous backup still queued at the next run: skipped, not stacked.
    assert scheduler.tick(T0.replace(hour=12, minute=0)) == []
    finish_all(db)
    assert len(scheduler.tick(T0.replace(hour=12, minute=1))) == 1
    assert scheduled(db, pid)[-1].params["scheduled_for"] == "2030-03-04T12:00:00+00:00"


def test_catch_up_after_downtime_makes_one_job_not_a_burst(db, servers):
    pid = add_policy(
        db, servers[:1], schedule_cron="*/15 * * * *", created_at=T0 - timedelta(minutes=1)
    )
    scheduler = Scheduler(db)
    assert len(scheduler.tick(T0 + timedelta(minutes=1))) == 1  # the 10:30 run
    finish_all(db)
    back = T0 + timedelta(days=3, minutes=7)  # 3 days down: ~288 runs missed
    created = scheduler.tick(back)
    assert len(created) == 1
    job = scheduled(db, pid)[-1]
    assert job.params["scheduled_for"] == "2030-03-07T10:30:00+00:00"
    log = messages(db, job.id)
    assert any(m.startswith("catch-up: runs from 2030-03-04T10:45:00") for m in log)
    finish_all(db)
    assert scheduler.tick(back + timedelta(minutes=1)) == []
    assert len(scheduler.tick(T0 + timedelta(days=3, minutes=15))) == 1


def test_rpo_policy_is_due_when_the_newest_backup_is_old_enough(db, servers):
    pid = add_policy(db, servers[:1], rpo_minutes=60)
    scheduler = Scheduler(db)
    assert len(scheduler.tick(T0)) == 1  # never backed up: due now
    job = scheduled(db, pid)[0]
    assert job.params["scheduled_for"] == T0.isoformat()
    finish_all(db)
    assert scheduler.tick(T0 + timedelta(minutes=59)) == []
    assert len(scheduler.tick(T0 + timedelta(minutes=60))) == 1
    finish_all(db)
    # A manual backup of the policy also counts towards the RPO.
    with db.session() as session:
        session.add(
            Job(
                kind=JobKind.BACKUP,
                policy_id=pid,
                created_by="user-admin",
                created_at=T0 + timedelta(minutes=100),
                state=JobState.SUCCEEDED,
            )
        )
    assert scheduler.tick(T0 + timedelta(minutes=150)) == []
    assert len(scheduler.tick(T0 + timedelta(minutes=160))) == 1


def test_disabled_policies_and_policies_without_targets_make_no_jobs(db, servers):
    add_policy(db, servers[:1], name="off", rpo_minutes=5, enabled=False)
    add_policy(db, [], name="empty", rpo_minutes=5)
    add_policy(db, servers[:1], name="broken", schedule_cron="not a cron")
    good = add_policy(db, servers[1:2], name="good", rpo_minutes=5)
    assert len(Scheduler(db).tick(T0)) == 1
    assert [j.policy_id for j in scheduled(db)] == [good]


def test_each_target_gets_its_own_job_and_the_template_adds_requirements(db, servers):
    with db.session() as session:
        database = ExchangeDatabase(
            server_id=servers[0], name="DB01", layout=DatabaseLayout.RDM_PHYSICAL
        )
        session.add(database)
        session.flush()
        database_id = database.id
    pid = add_policy(db, servers[:1], rpo_minutes=30, method=ProtectionMethod.ARRAY_SNAPSHOT)
    with db.session() as session:
        session.add(PolicyTarget(policy_id=pid, server_id=servers[0], database_id=database_id))

    def template(session, policy, target):
        caps = ["array:btrfs-1"] if target.database_id else ["vcenter"]
        return {"required_capabilities": caps, "params": {"resources": ["array:btrfs-1"]}}

    assert len(Scheduler(db, job_template=template).tick(T0)) == 2
    jobs = {j.database_id: j for j in scheduled(db, pid)}
    assert jobs[None].required_capabilities == ["vcenter"]
    assert jobs[database_id].required_capabilities == ["array:btrfs-1"]
    assert jobs[database_id].params == {
        "resources": ["array:btrfs-1"],
        "scheduled_for": T0.isoformat(),
    }


def test_concurrent_schedulers_create_each_job_exactly_once(db, database_url, servers):
    for i in range(6):
        add_policy(db, servers, name=f"p{i}", rpo_minutes=10)
    for i in range(3):
        add_policy(
            db,
            servers[:1],
            name=f"c{i}",
            schedule_cron="*/5 * * * *",
            created_at=T0 - timedelta(minutes=1),
        )
    databases = [Database(database_url) for _ in range(3)]
    try:
        schedulers = [Scheduler(d) for d in databases]
        rounds = 4
        for r in range(rounds):
            now = T0 + timedelta(minutes=10 * r, seconds=1)
            barrier = threading.Barrier(len(schedulers))
            errors = []

            def tick(s, now=now, barrier=barrier, errors=errors):
                try:
                    barrier.wait()
                    for _ in range(3):
                        s.tick(now)
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)

            threads = [threading.Thread(target=tick, args=(s,)) for s in schedulers]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert not errors, errors
            finish_all(db)
    finally:
        for d in databases:
            d.dispose()
    with db.session() as session:
        total = session.scalar(select(func.count(Job.id)))
        per_round = session.execute(
            select(Job.policy_id, Job.server_id, func.count(Job.id))
            .group_by(Job.policy_id, Job.server_id)
            .having(func.count(Job.id) != rounds)
        ).all()
    assert per_round == []
    assert total == rounds * (6 * len(servers) + 3)


def test_run_forever_ticks_until_stopped(db, servers):
    add_policy(db, servers[:1], rpo_minutes=60)
    stop = threading.Event()
    thread = threading.Thread(target=Scheduler(db).run_forever, args=(stop, 0.05))
    thread.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while not scheduled(db) and datetime.now(UTC) < deadline:
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert len(scheduled(db)) == 1


def test_one_failing_policy_does_not_stop_the_others(db, servers):
    bad = add_policy(db, servers[:1], name="bad", rpo_minutes=5)
    good = add_policy(db, servers[1:2], name="good", rpo_minutes=5)

    def template(session, policy, target):
        if policy.id == bad:
            raise RuntimeError("strategy cannot serve this target")
        return {}

    assert len(Scheduler(db, job_template=template).tick(T0)) == 1
    assert [j.policy_id for j in scheduled(db)] == [good]


def test_inventory_resync_is_scheduled_once_per_window(db):
    from app.db.models import Connection, Job
    from app.domain.connections import ConnectionKind

    with db.session() as session:
        session.add_all(
            [
                Connection(name="vc-a", kind=ConnectionKind.VCENTER),
                Connection(name="repo", kind=ConnectionKind.REPOSITORY),
            ]
        )
    scheduler = Scheduler(db, resync_minutes=15)
    first = scheduler.tick(T0)
    assert len(first) == 1  # the vCenter only
    assert scheduler.tick(T0 + timedelta(minutes=5)) == []  # still queued
    with db.session() as session:
        job = session.get(Job, first[0])
        assert job.kind == JobKind.SYNC and job.required_capabilities == ["vcenter"]
        job.state = JobState.SUCCEEDED
    assert scheduler.tick(T0 + timedelta(minutes=10)) == []  # fresh enough
    assert len(scheduler.tick(T0 + timedelta(minutes=16))) == 1
    assert Scheduler(db).tick(T0 + timedelta(hours=5)) == []  # off unless asked
