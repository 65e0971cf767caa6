"""Workers run handlers: progress, events, outcomes, retries, cancellation, proxies."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import select, update

from app.db.models import Job, JobEvent, Proxy
from app.domain.jobs import EventLevel, JobKind, JobState
from app.jobs import JobCancelled, JobResult, PermanentError
from app.jobs.engine import JobEngine
from tests.jobs.conftest import (
    FakeClock,
    add_job,
    in_thread,
    load_job,
    make_worker,
    messages,
    wait_for,
)


def test_a_job_runs_with_progress_steps_and_events(db, registry):
    seen = {}

    def run(ctx):
        seen["params"] = ctx.params
        ctx.step("snapshot")
        ctx.progress(40, bytes_done=400, bytes_total=1000)
        ctx.event("snapshot snapshot-7 created")
        ctx.step("copy", "copying 1000 bytes")
        ctx.progress(bytes_done=1000)

    registry.register(JobKind.VERIFY, run)
    job_id = add_job(db, params={"restore_point_id": 3})
    worker = make_worker(db, "w1", registry)
    assert worker.run_once() == job_id
    assert worker.run_once() is None
    job = load_job(db, job_id)
    assert seen["params"] == {"restore_point_id": 3}
    assert job.state == JobState.SUCCEEDED and job.error is None
    assert (job.progress_percent, job.bytes_done, job.bytes_total) == (100.0, 1000, 1000)
    assert job.current_step == "copy" and job.finished_at is not None
    assert job.worker_name == "w1" and job.lease_expires_at is None
    steps = [(e.step, e.message) for e in job.events]
    assert ("snapshot", "step: snapshot") in steps
    assert ("snapshot", "snapshot snapshot-7 created") in steps
    assert ("copy", "copying 1000 bytes") in steps
    assert steps[-1] == ("", "succeeded")


def test_progress_is_visible_while_the_job_runs(db, registry):
    go = threading.Event()

    def run(ctx):
        ctx.progress(25, bytes_done=5, bytes_total=20, step="copy")
        go.wait(10)

    registry.register(JobKind.VERIFY, run)
    job_id = add_job(db)
    thread, _ = in_thread(make_worker(db, "w1", registry).run_once)
    wait_for(lambda: load_job(db, job_id).progress_percent == 25)
    assert load_job(db, job_id).current_step == "copy"
    go.set()
    thread.join(10)
    assert load_job(db, job_id).state == JobState.SUCCEEDED


def test_a_handler_may_report_partial_success(db, registry):
    registry.register(
        JobKind.BACKUP, lambda ctx: JobResult(partial=True, message="1 of 2 databases copied")
    )
    job_id = add_job(db, JobKind.BACKUP)
    make_worker(db, "w1", registry).run_once()
    job = load_job(db, job_id)
    assert job.state == JobState.PARTIALLY_SUCCEEDED
    assert job.events[-1].message == "1 of 2 databases copied"
    assert job.events[-1].level == EventLevel.WARNING


def test_failures_retry_with_backoff_then_fail_with_the_last_error(db, registry):
    calls = []

    def run(ctx):
        calls.append(ctx.attempt)
        raise RuntimeError(f"datastore busy (attempt {ctx.attempt})")

    registry.register(JobKind.VERIFY, run)
    clock = FakeClock()
    engine = JobEngine(db, lease_seconds=2, retry_base_s=30, retry_cap_s=600, clock=clock)
    worker = make_worker(db, "w1", registry, engine=engine)
    job_id = add_job(db, max_attempts=3, not_before=clock())

    assert worker.run_once() == job_id
    job = load_job(db, job_id)
    assert (job.state, job.attempts, job.worker_name) == (JobState.QUEUED, 1, None)
    assert job.error == "RuntimeError: datastore busy (attempt 1)"
    assert job.not_before == clock() + timedelta(seconds=30)
    assert worker.run_once() is None  # not before the backoff is over
    clock.advance(seconds=30)
    assert worker.run_once() == job_id
    assert load_job(db, job_id).not_before == clock() + timedelta(seconds=60)
    clock.advance(seconds=60)
    assert worker.run_once() == job_id

    job = load_job(db, job_id)
    assert calls == [1, 2, 3]
    assert (job.state, job.attempts) == (JobState.FAILED, 3)
    assert job.error == "RuntimeError: datastore busy (attempt 3)"
    log = [e.message for e in job.events]
    assert any("attempt 1 of 3 failed" in m and "retrying in 30 s" in m for m in log)
    assert any("attempt 2 of 3 failed" in m and "retrying in 60 s" in m for m in log)
    assert log[-1] == "failed after 3 of 3 attempts: RuntimeError: datastore busy (attempt 3)"
    assert worker.run_once() is None


def test_a_job_that_fails_twice_succeeds_on_the_third_attempt(db, registry):
    def run(ctx):
        if ctx.attempt < 3:
            raise ConnectionError("vCenter unreachable")

    registry.register(JobKind.SYNC, run)
    clock = FakeClock()
    engine = JobEngine(db, lease_seconds=2, retry_base_s=1, clock=clock)
    worker = make_worker(db, "w1", registry, engine=engine)
    job_id = add_job(db, JobKind.SYNC, not_before=clock())
    for _ in range(3):
        assert worker.run_once() == job_id
        clock.advance(seconds=10)
    job = load_job(db, job_id)
    assert (job.state, job.attempts, job.error) == (JobState.SUCCEEDED, 3, None)


def test_permanent_errors_are_not_retried(db, registry):
    def run(ctx):
        raise PermanentError("restore point 9 does not exist")

    registry.register(JobKind.RESTORE, run)
    job_id = add_job(db, JobKind.RESTORE, max_attempts=5)
    make_worker(db, "w1", registry).run_once()
    job = load_job(db, job_id)
    assert (job.state, job.attempts) == (JobState.FAILED, 1)
    assert job.error == "PermanentError: restore point 9 does not exist"


def test_job_params_are_not_copied_into_errors_or_events(db, registry):
    def run(ctx):
        raise ValueError("bad input")

    registry.register(JobKind.RESTORE, run)
    job_id = add_job(db, JobKind.RESTORE, params={"target_password": "s3cret-value"})
    make_worker(db, "w1", registry).run_once()
    with db.session() as session:
        texts = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
    job = load_job(db, job_id)
    assert job.state == JobState.QUEUED and job.error == "ValueError: bad input"
    assert not any("s3cret" in t for t in [*texts, job.error])


def _cancel_like_the_api(db, job_id):
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))


def test_cancelling_a_running_job_stops_the_handler_promptly(db, registry):
    started = threading.Event()

    def run(ctx):
        started.set()
        for i in range(600):  # up to 30 s of work in 50 ms steps
            if ctx.sleep(0.05):
                return None
            ctx.progress(i / 6)
        return None

    registry.register(JobKind.VERIFY, run)
    job_id = add_job(db)
    thread, out = in_thread(make_worker(db, "w1", registry).run_once)
    assert started.wait(10)
    asked = time.monotonic()
    _cancel_like_the_api(db, job_id)
    thread.join(15)
    assert not thread.is_alive() and "error" not in out
    assert time.monotonic() - asked < 10  # generous: the poll is every 50 ms here
    job = load_job(db, job_id)
    assert job.state == JobState.CANCELLED and job.finished_at is not None
    assert job.events[-1].message == "cancelled"


def test_check_cancelled_raises_and_ends_cancelled_after_cleanup(db, registry):
    cleaned = []

    def run(ctx):
        ctx.add_leftover({"type": "temp_file", "path": "/tmp/x"})
        while True:
            ctx.check_cancelled()
            time.sleep(0.02)

    registry.register(JobKind.VERIFY, run, cleanup=lambda ctx, items: cleaned.extend(items))
    job_id = add_job(db)
    thread, _ = in_thread(make_worker(db, "w1", registry).run_once)
    wait_for(lambda: load_job(db, job_id).leftovers)
    _cancel_like_the_api(db, job_id)
    thread.join(15)
    job = load_job(db, job_id)
    assert job.state == JobState.CANCELLED
    assert cleaned == [{"type": "temp_file", "path": "/tmp/x"}] and job.leftovers == []


def test_a_handler_that_ignores_cancel_and_finishes_succeeds(db, registry):
    def run(ctx):
        _cancel_like_the_api(db, ctx.job_id)
        time.sleep(0.2)

    registry.register(JobKind.VERIFY, run)
    job_id = add_job(db)
    make_worker(db, "w1", registry).run_once()
    job = load_job(db, job_id)
    assert job.state == JobState.SUCCEEDED
    assert "cancel came after the work was done" in messages(db, job_id)


def test_leftovers_are_persisted_at_once_and_cleaned_after_a_failed_attempt(db, registry):
    seen_in_db = []
    cleaned = []

    def run(ctx):
        ctx.add_leftover({"type": "vm_snapshot", "vm": "vm-42", "moref": "snapshot-1"})
        ctx.add_leftover({"type": "temp_file", "path": "/tmp/a"})
        ctx.remove_leftover({"type": "temp_file", "path": "/tmp/a"})
        seen_in_db.append(load_job(db, ctx.job_id).leftovers)
        raise OSError("copy failed")

    registry.register(JobKind.BACKUP, run, cleanup=lambda ctx, items: cleaned.append(items))
    job_id = add_job(db, JobKind.BACKUP)
    make_worker(db, "w1", registry).run_once()
    snap = {"type": "vm_snapshot", "vm": "vm-42", "moref": "snapshot-1"}
    assert seen_in_db == [[snap]]
    assert cleaned == [[snap]]
    job = load_job(db, job_id)
    assert job.state == JobState.QUEUED and job.leftovers == []
    assert any("cleaning up 1 leftover(s) (vm_snapshot)" in m for m in messages(db, job_id))


def test_failed_cleanup_keeps_the_leftovers_for_the_next_attempt(db, registry):
    def run(ctx):
        if ctx.attempt == 1:
            ctx.add_leftover({"type": "vm_snapshot", "moref": "snapshot-9"})
            raise RuntimeError("host disconnected")

    def cleanup(ctx, items):
        if ctx.attempt == 1:
            raise RuntimeError("vCenter unreachable")

    registry.register(JobKind.BACKUP, run, cleanup=cleanup)
    clock = FakeClock()
    engine = JobEngine(db, lease_seconds=2, retry_base_s=1, clock=clock)
    worker = make_worker(db, "w1", registry, engine=engine)
    job_id = add_job(db, JobKind.BACKUP, not_before=clock())
    worker.run_once()
    job = load_job(db, job_id)
    assert job.state == JobState.QUEUED
    assert job.leftovers == [{"type": "vm_snapshot", "moref": "snapshot-9"}]
    assert any("cleanup failed: RuntimeError: vCenter unreachable" in e.message for e in job.events)
    clock.advance(seconds=5)
    worker.run_once()
    job = load_job(db, job_id)
    assert job.state == JobState.SUCCEEDED and job.leftovers == []


def test_handler_capabilities_route_whole_kinds(db, registry):
    registry.register(JobKind.SYNC, lambda ctx: None, capabilities=["vcenter"])
    registry.register(JobKind.VERIFY, lambda ctx: None)
    sync = add_job(db, JobKind.SYNC)
    verify = add_job(db)
    plain = make_worker(db, "plain", registry)
    assert plain.kinds == [JobKind.VERIFY]
    assert plain.run_once() == verify
    assert plain.run_once() is None
    assert make_worker(db, "vc", registry, ["vcenter"]).run_once() == sync


def test_run_forever_heartbeats_the_proxy_row_and_runs_jobs_concurrently(db, registry):
    both_running = threading.Barrier(2, timeout=10)

    def run(ctx):
        both_running.wait()  # only passes if two jobs run at the same time

    registry.register(JobKind.VERIFY, run)
    ids = [add_job(db), add_job(db)]
    worker = make_worker(
        db, "proxy-1", registry, ["vcenter", "array:btrfs-1"], concurrency=2, hostname="px1"
    )
    stop = threading.Event()
    thread, out = in_thread(lambda: worker.run_forever(stop))

    def proxy():
        with db.session() as session:
            return session.scalar(select(Proxy).where(Proxy.name == "proxy-1"))

    first = wait_for(proxy)
    assert first.hostname == "px1" and first.capabilities == ["array:btrfs-1", "vcenter"]
    wait_for(lambda: proxy().last_heartbeat_at > first.last_heartbeat_at)
    wait_for(lambda: all(load_job(db, i).state == JobState.SUCCEEDED for i in ids))
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and "error" not in out
    assert proxy().started_at == first.started_at


def test_stopping_a_worker_hands_running_jobs_back_to_the_queue(db, registry):
    cleaned = []

    def run(ctx):
        ctx.add_leftover({"type": "temp_file", "path": "/tmp/y"})
        while not ctx.sleep(0.05):
            pass

    registry.register(JobKind.VERIFY, run, cleanup=lambda ctx, items: cleaned.extend(items))
    job_id = add_job(db)
    worker = make_worker(db, "w1", registry)
    stop = threading.Event()
    thread, _ = in_thread(lambda: worker.run_forever(stop))
    wait_for(lambda: load_job(db, job_id).leftovers)
    stop.set()
    thread.join(15)
    job = load_job(db, job_id)
    assert (job.state, job.attempts, job.worker_name) == (JobState.QUEUED, 0, None)
    assert cleaned == [{"type": "temp_file", "path": "/tmp/y"}] and job.leftovers == []
    assert "returned to the queue: worker w1 is stopping" in messages(db, job_id)


def test_cancel_during_a_takeover_cleans_then_cancels(db, registry):
    cleaned = []
    registry.register(JobKind.VERIFY, lambda ctx: None, cleanup=lambda c, i: cleaned.extend(i))
    job_id = add_job(db)
    engine = JobEngine(db, lease_seconds=0.2)
    engine.claim("dead")
    engine.save_leftovers(job_id, "dead", [{"type": "clone", "name": "c1"}])
    engine.request_cancel(job_id)
    time.sleep(0.3)  # let the lease run out
    assert make_worker(db, "w2", registry).run_once() == job_id
    job = load_job(db, job_id)
    assert job.state == JobState.CANCELLED and cleaned == [{"type": "clone", "name": "c1"}]


def test_job_cancelled_raised_by_handler(db, registry):
    def run(ctx):
        raise JobCancelled("operator asked")

    registry.register(JobKind.VERIFY, run)
    job_id = add_job(db)
    make_worker(db, "w1", registry).run_once()
    assert load_job(db, job_id).state == JobState.CANCELLED
