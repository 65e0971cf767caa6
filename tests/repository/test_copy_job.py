"""The copy job through the API and the job engine: restore points of a filesystem
repository copied to SeaweedFS, catalogued as second copies, incremental on the next run,
readable from the copy after the primary is wiped, progress in bytes."""

from __future__ import annotations

import shutil
from datetime import timedelta

from app.composition import load_handlers
from app.db.models import Job, RestorePoint
from app.db.types import utcnow
from app.domain.jobs import JobState
from app.domain.protection import CopyLocation
from app.jobs import Worker
from app.jobs.handlers import registry as product_registry
from app.repository import open_repository
from tests.repository.test_jobs_and_api import FAST, Estate, add_repository, run_jobs


def test_a_copy_job_makes_a_second_copy_that_survives_the_primary(
    client, admin, app, seaweedfs, tmp_path
):
    runtime = app.state.runtime
    load_handlers()
    worker = Worker(runtime, "copier", [], registry=product_registry, **FAST)
    primary = add_repository(client, admin, tmp_path / "primary", encrypted=True, runtime=runtime)
    # The target is tested (initialised) like any repository; the copy adopts it as a replica.
    target = add_repository(client, admin, tmp_path / "offsite", encrypted=True, peer=seaweedfs)
    estate = Estate(runtime, primary)
    now = utcnow()
    first = estate.add_point(now - timedelta(hours=2), seed=1, disks=2)

    def copy() -> Job:
        r = client.post(
            f"/api/v1/repositories/{primary}/copy",
            json={"target_repository_id": target},
            headers=admin,
        )
        assert r.status_code == 202, r.text
        run_jobs(worker)
        with runtime.db.session() as session:
            job = session.get(Job, r.json()["job_id"])
            session.expunge(job)
            assert job.state == JobState.SUCCEEDED, (job.error, [e.message for e in job.events])
            return job

    job = copy()
    done = job.result["details"]
    assert done["images"] == 2 and job.bytes_done == done["bytes_copied"] > 0
    second = estate.add_point(now - timedelta(hours=1), seed=1, disks=1)  # the same blocks
    done = copy().result["details"]
    # Only the new point's image travels, and none of its blocks: the copy has them.
    assert done["images"] == 1 and done["chunks_copied"] == 0 and done["chunks_present"] == 3
    assert copy().result["details"]["images"] == 0  # nothing new: nothing copied
    with runtime.db.session() as session:
        for point_id in (first, second):
            point = session.get(RestorePoint, point_id)
            where = {(c.location, c.connection_id) for c in point.copies if c.removed_at is None}
            assert where == {(CopyLocation.REPOSITORY, primary), (CopyLocation.REPOSITORY, target)}
    # The primary is wiped: every image still reads back from the copy, byte for byte.
    shutil.rmtree(tmp_path / "primary")
    with runtime.db.session() as session:
        offsite = open_repository(session, target, root_key=runtime.settings.root_key())
        for point_id in (first, second):
            for c in session.get(RestorePoint, point_id).copies:
                if c.connection_id == target:
                    manifest = offsite.load_manifest(c.reference)
                    assert b"".join(offsite.read_image(manifest)) == estate.images[c.reference]
    r = client.post(
        f"/api/v1/repositories/{primary}/copy",
        json={"target_repository_id": primary},
        headers=admin,
    )
    assert r.status_code == 422
