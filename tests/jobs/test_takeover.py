"""A worker that dies loses its lease; another takes the job over and cleans up first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from app.domain.jobs import EventLevel, JobKind, JobState
from app.jobs.engine import JobEngine
from tests.jobs.conftest import add_job, in_thread, load_job, make_worker, messages, wait_for
from tests.jobs.crash_worker import LEFTOVER

ROOT = Path(__file__).resolve().parents[2]


def test_a_worker_that_stops_heartbeating_is_taken_over(db, registry):
    release_a = threading.Event()
    cleaned: list[tuple[str, list]] = []
    a_saw_cancel = threading.Event()

    def run(ctx):
        if ctx.worker_name == "worker-a":
            ctx.step("snapshot")
            ctx.add_leftover({"type": "vm_snapshot", "vm": "vm-7", "moref": "snapshot-31"})
            while not ctx.sleep(0.02):  # works until told to stop
                pass
            if ctx.lease_lost:
                a_saw_cancel.set()
            release_a.wait(20)
            return None
        ctx.step("copy")
        return None

    def cleanup(ctx, leftovers):
        cleaned.append((ctx.worker_name, leftovers))

    registry.register(JobKind.BACKUP, run, cleanup=cleanup)
    job_id = add_job(db, JobKind.BACKUP, max_attempts=3)
    # Worker A "dies": its lease is short and its heartbeat never comes.
    worker_a = make_worker(db, "worker-a", registry, lease_seconds=0.5, heartbeat_interval=3600)
    thread_a, out_a = in_thread(worker_a.run_once)
    wait_for(lambda: load_job(db, job_id).leftovers)

    worker_b = make_worker(db, "worker-b", registry)
    assert wait_for(worker_b.run_once) == job_id

    job = load_job(db, job_id)
    assert job.state == JobState.SUCCEEDED and job.worker_name == "worker-b"
    assert job.attempts == 2 and job.leftovers == []
    assert cleaned == [
        ("worker-b", [{"type": "vm_snapshot", "vm": "vm-7", "moref": "snapshot-31"}])
    ]
    takeover = [e for e in job.events if e.message.startswith("taken over from worker worker-a")]
    assert len(takeover) == 1 and takeover[0].level == EventLevel.WARNING
    log = [e.message for e in job.events]
    assert log.index(takeover[0].message) < log.index("leftovers cleaned up")
    assert "attempt 2 of 3 on worker worker-b" in log

    # A's context noticed the lost lease; when A returns, its outcome is dropped.
    wait_for(a_saw_cancel.is_set)
    release_a.set()
    thread_a.join(10)
    assert "error" not in out_a
    assert load_job(db, job_id).state == JobState.SUCCEEDED


def test_a_taken_over_job_without_attempts_left_is_cleaned_then_failed(db, registry):
    cleaned = []
    registry.register(JobKind.BACKUP, lambda ctx: None, cleanup=lambda c, i: cleaned.extend(i))
    job_id = add_job(db, JobKind.BACKUP, max_attempts=1)
    dead = JobEngine(db, lease_seconds=0.1)
    dead.claim("worker-a")
    dead.save_leftovers(job_id, "worker-a", [{"type": "vm_snapshot", "moref": "snapshot-2"}])
    worker_b = make_worker(db, "worker-b", registry)
    assert wait_for(worker_b.run_once) == job_id
    job = load_job(db, job_id)
    assert job.state == JobState.FAILED and job.attempts == 1
    assert job.error == "worker worker-a stopped responding during the last attempt"
    assert cleaned == [{"type": "vm_snapshot", "moref": "snapshot-2"}] and job.leftovers == []


def test_a_killed_worker_process_is_taken_over(db, registry, database_url):
    cleaned = []

    def cleanup(ctx, leftovers):
        cleaned.extend(leftovers)
        for item in leftovers:
            ctx.remove_leftover(item)

    registry.register(JobKind.BACKUP, lambda ctx: ctx.step("copy"), cleanup=cleanup)
    job_id = add_job(db, JobKind.BACKUP, required_capabilities=["vcenter"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.jobs.crash_worker", database_url, "proxy-doomed"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: load_job(db, job_id).leftovers or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, proc.stderr.read().decode()
        assert load_job(db, job_id).worker_name == "proxy-doomed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stderr.close()

    worker_b = make_worker(db, "proxy-b", registry, ["vcenter"])
    assert wait_for(worker_b.run_once, timeout=15) == job_id
    job = load_job(db, job_id)
    assert job.state == JobState.SUCCEEDED and job.leftovers == []
    assert cleaned == [LEFTOVER]
    log = messages(db, job_id)
    assert any(m.startswith("taken over from worker proxy-doomed by proxy-b") for m in log)
    assert "cleaning up 1 leftover(s) (vm_snapshot) [taken over from proxy-doomed]" in log


def test_a_live_worker_keeps_its_job(db, registry):
    """Heartbeats extend the lease: nobody takes over a job whose worker is alive."""
    release = threading.Event()
    registry.register(JobKind.VERIFY, lambda ctx: release.wait(10) and None)
    job_id = add_job(db)
    worker_a = make_worker(db, "worker-a", registry, lease_seconds=0.6, heartbeat_interval=0.1)
    thread, _ = in_thread(worker_a.run_once)
    wait_for(lambda: load_job(db, job_id).state == JobState.RUNNING)
    first_lease = load_job(db, job_id).lease_expires_at
    worker_b = make_worker(db, "worker-b", registry)
    for _ in range(10):  # well past the original lease
        assert worker_b.run_once() is None
        threading.Event().wait(0.15)
    assert load_job(db, job_id).lease_expires_at > first_lease
    release.set()
    thread.join(10)
    job = load_job(db, job_id)
    assert job.state == JobState.SUCCEEDED and job.worker_name == "worker-a"
