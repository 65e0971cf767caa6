"""Permanent errors fail a job at once, with the reason and where to fix it; transient ones
(timeouts, connection resets) are retried."""

from __future__ import annotations

import pytest

from app.adapters import arrays, mail, vsphere
from app.domain.jobs import JobKind, JobState
from app.domain.protection import RestoreRefused
from app.jobs import PermanentError
from tests.jobs.conftest import add_job, load_job, make_worker

PERMANENT = [
    vsphere.ObjectNotFound("snapshot-41", "snapshot"),
    vsphere.CertificateUntrusted("vc.corp", 443, "AB:CD", "certificate verify failed"),
    vsphere.AuthenticationFailed("vc.corp", 443, "svc-bulwark"),
    arrays.SnapshotNotFound("array-1", "g@bulwark-job-3"),
    mail.CertificateUntrusted("imap.corp: certificate verify failed"),
    RestoreRefused("confirm by setting params.confirm to the server's name"),
]
TRANSIENT = [
    vsphere.TaskTimeout("task-9", "reverting", 90),
    vsphere.Unreachable("vc.corp", 443, "timed out"),
    ConnectionResetError(104, "Connection reset by peer"),
    TimeoutError("read timed out"),
]


@pytest.mark.parametrize("error", PERMANENT, ids=lambda e: type(e).__name__)
def test_a_permanent_error_fails_at_once_with_its_reason(db, registry, error):
    def run(ctx):
        raise error

    registry.register(JobKind.RESTORE, run)
    job_id = add_job(db, JobKind.RESTORE, max_attempts=3)
    make_worker(db, "w1", registry, retry_base_s=0.0).run_once()
    job = load_job(db, job_id)
    assert (job.state, job.attempts) == (JobState.FAILED, 1), job.error
    assert job.error == f"{type(error).__name__}: {error}"
    assert job.events[-1].message == f"failed after 1 of 3 attempts: {job.error}"


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_a_transient_error_is_retried(db, registry, error):
    def run(ctx):
        raise error

    registry.register(JobKind.RESTORE, run)
    job_id = add_job(db, JobKind.RESTORE, max_attempts=3)
    worker = make_worker(db, "w1", registry, retry_base_s=0.0)
    assert worker.run_once() == job_id
    job = load_job(db, job_id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 1)
    while worker.run_once() is not None:
        pass
    job = load_job(db, job_id)
    assert (job.state, job.attempts) == (JobState.FAILED, 3)


def test_a_permanent_error_carries_where_to_fix_it(db, registry):
    def run(ctx):
        raise PermanentError("vCenter 'vc1': not trusted", fix="/connections/7/trust")

    registry.register(JobKind.SYNC, run)
    job_id = add_job(db, JobKind.SYNC)
    make_worker(db, "w1", registry).run_once()
    job = load_job(db, job_id)
    assert (job.state, job.attempts) == (JobState.FAILED, 1)
    assert job.result == {"fix": "/connections/7/trust"}
