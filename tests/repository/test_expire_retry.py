"""An expire attempt that dies while deleting manifests (the catalog already committed):
the retry deletes what the catalog says is expired, not only what it expires itself."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.composition import load_handlers
from app.db.models import Job, RestorePoint
from app.db.types import utcnow
from app.domain.jobs import JobState
from app.domain.protection import RestorePointStatus
from app.jobs import Worker
from app.jobs.handlers import registry as product_registry
from app.repository import Repository
from tests.repository.test_jobs_and_api import FAST, Estate, add_repository, run_jobs


@pytest.fixture
def runtime(app, client):
    return app.state.runtime


@pytest.fixture
def worker(runtime):
    load_handlers()
    return Worker(runtime, "repo-worker", [], registry=product_registry, **FAST)


def test_the_retry_deletes_the_manifests_an_attempt_died_deleting(
    client, admin, runtime, worker, tmp_path, monkeypatch
):
    repo_id = add_repository(client, admin, tmp_path / "lib", runtime=runtime)
    estate = Estate(runtime, repo_id, keep_last=1)
    now = utcnow()
    points = [estate.add_point(now - timedelta(hours=5 - i), seed=i, disks=2) for i in range(5)]
    with runtime.db.session() as session:
        doomed = [c.reference for p in points[:-1] for c in session.get(RestorePoint, p).copies]
    real_delete = Repository.delete_manifest
    deleted: list[str] = []

    def dies_after_two(self, manifest_id):
        if len(deleted) == 2:
            raise ConnectionResetError("the worker's storage went away")  # the attempt dies
        real_delete(self, manifest_id)
        deleted.append(manifest_id)

    monkeypatch.setattr(Repository, "delete_manifest", dies_after_two)
    r = client.post(f"/api/v1/repositories/{repo_id}/expire", headers=admin)
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    assert worker.run_once() == job_id
    with runtime.db.session() as session:
        job = session.get(Job, job_id)
        assert (job.state, job.attempts) == (JobState.QUEUED, 1), job.error
        repo = estate.repo(session)
        left = set(repo.list_manifests())
        # The catalog said expired before the deletes began: 8 manifests, 2 deleted.
        assert len(left & set(doomed)) == len(doomed) - 2
        for point_id in points[:-1]:
            assert session.get(RestorePoint, point_id).status == RestorePointStatus.EXPIRED

    monkeypatch.setattr(Repository, "delete_manifest", real_delete)
    run_jobs(worker)  # the retry
    with runtime.db.session() as session:
        job = session.get(Job, job_id)
        assert job.state == JobState.SUCCEEDED, job.error
        repo = estate.repo(session)
        assert not set(repo.list_manifests()) & set(doomed)
        (newest,) = session.get(RestorePoint, points[-1]).copies[:1]
        assert newest.reference in repo.list_manifests()  # what is kept stays
        assert set(job.result["details"]["removed_manifests"]) == set(doomed) - set(deleted)
