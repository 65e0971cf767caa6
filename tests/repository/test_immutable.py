"""Immutable repositories on SeaweedFS (which enforces Object Lock COMPLIANCE): every object
an image needs is locked, reuse extends the lock, GC and expiry leave locked objects alone
and say until when, and nothing in Bulwark (any role) removes what is locked."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from app.repository.chunks import chunk_key
from app.repository.errors import RepositoryError, RepositoryLocked
from app.repository.gc import collect_garbage
from app.repository.store import open_repository_in
from tests.repository.conftest import ROOT_KEY, make_image, s3_store

BS = 64 * 1024
DAYS = 2


@pytest.fixture
def locked(seaweedfs, tmp_path):
    """An encrypted, immutable repository in a bucket with Object Lock."""
    store = s3_store(seaweedfs, tmp_path, bucket=seaweedfs.locked_bucket())
    return open_repository_in(
        store,
        label="immutable",
        key=ROOT_KEY,
        create=True,
        encrypted=True,
        block_size=BS,
        immutable_days=DAYS,
    )


def backup(repo, kinds, seed):
    image = make_image(kinds, BS, seed=seed)
    m = repo.write_image(io.BytesIO(image), size=len(image), source_info={})
    repo.save_manifest(m)
    return m, image


def test_an_immutable_repository_needs_a_bucket_with_object_lock(seaweedfs, tmp_path):
    with pytest.raises(RepositoryError, match="Object Lock"):
        open_repository_in(
            s3_store(seaweedfs, tmp_path), label="x", create=True, immutable_days=DAYS
        )


def test_every_object_of_an_image_is_locked_and_survives_bulwark_and_the_s3_api(locked, seaweedfs):
    m, image = backup(locked, ["r", "t", "r"], seed=1)
    inner = locked.store.inner
    soon = datetime.now(UTC) + timedelta(days=DAYS)
    keys = [chunk_key(d) for d in m.digests()] + [f"manifests/{m.id}"]
    for key in keys:
        assert abs((inner.retention(key) - soon).total_seconds()) < 120, key
    # Through Bulwark: refused with the date.
    with pytest.raises(RepositoryLocked, match="immutable until") as refused:
        locked.delete_manifest(m.id)
    assert refused.value.until == locked.locked_until(m.id)
    with pytest.raises(OSError, match="locked until"):
        locked.store.delete(keys[0])
    # Directly through the S3 API with Bulwark's own credentials: no version can go.
    s3, bucket = seaweedfs.client(), inner.bucket
    for key in keys:
        version = s3.head_object(Bucket=bucket, Key=inner.prefix + key)["VersionId"]
        with pytest.raises(ClientError):
            s3.delete_object(
                Bucket=bucket,
                Key=inner.prefix + key,
                VersionId=version,
                BypassGovernanceRetention=True,
            )
    # Overwriting and "deleting" only stack new versions on top: a read brings a
    # delete-marked block back, and verify's quarantine of an overwritten one heals it.
    time.sleep(1.1)  # S3 version times are whole seconds
    overwritten, hidden = (k.rsplit("/", 1)[-1] for k in keys[:2])
    s3.put_object(Bucket=bucket, Key=inner.prefix + keys[0], Body=b"ransom note")
    s3.delete_object(Bucket=bucket, Key=inner.prefix + keys[1])
    damaged = locked.verify_image(m)
    assert [d.digest for d in damaged] == [overwritten]
    locked.chunks.quarantine(overwritten)  # what the verify job does with damage
    assert locked.verify_image(m) == []
    assert b"".join(locked.read_image(m)) == image
    assert inner.exists(keys[1]) and hidden in m.digests()


def test_reusing_a_block_extends_its_lock_to_the_new_points_end(locked):
    first, _ = backup(locked, ["r", "t"], seed=2)
    inner = locked.store.inner
    old_end = inner.retention(f"manifests/{first.id}")
    later = datetime.now(UTC) + timedelta(days=10)
    locked.store.clock = lambda: later  # ten days on: the first point's lock is long over
    second, image = backup(locked, ["r", "t"], seed=2)  # the same blocks, reused
    new_end = (later + timedelta(days=DAYS)).replace(microsecond=0)
    assert inner.retention(f"manifests/{second.id}") == new_end
    for digest in second.digests():
        assert inner.retention(chunk_key(digest)) == new_end  # moved on, not left at old_end
    assert inner.retention(f"manifests/{first.id}") == old_end


def test_gc_leaves_locked_garbage_and_says_when_it_can_go(locked):
    kept, _ = backup(locked, ["r"], seed=3)
    orphan = locked.put_chunk(b"a block no image names any more" * 100)
    report = collect_garbage(locked, grace_s=-60, images_only=True)
    assert report.removed_chunks == 0 and report.locked_objects == 1
    assert report.reclaim_at == locked.store.inner.retention(chunk_key(orphan))
    assert locked.has_chunk(orphan) and locked.verify_image(kept) == []


def test_immutability_is_decided_at_creation_and_cannot_be_switched_off(locked):
    again = open_repository_in(locked.store.inner, label="again", key=ROOT_KEY)
    assert again.immutable_days == DAYS  # from the config, though nobody asked
    assert type(again.store).__name__ == "LockingStore"


def test_nothing_in_bulwark_removes_a_locked_restore_point_for_any_role(
    client, admin, app, seaweedfs, tmp_path
):
    from app.composition import load_handlers
    from app.db.models import Job, RestorePoint
    from app.db.types import utcnow
    from app.domain.jobs import JobState
    from app.jobs import Worker
    from app.jobs.handlers import registry as product_registry
    from tests.repository.test_jobs_and_api import FAST, Estate, run_jobs

    runtime = app.state.runtime
    store = s3_store(seaweedfs, tmp_path, bucket=seaweedfs.locked_bucket())
    options = {
        "backend": "s3",
        "endpoint": seaweedfs.endpoint,
        "bucket": store.bucket,
        "prefix": store.prefix,
        "encrypted": True,
        "immutable_days": DAYS,
    }
    body = {
        "name": "vault",
        "kind": "repository",
        "options": options,
        "username": seaweedfs.access_key,
        "password": seaweedfs.secret_key,
    }
    repo_id = client.post("/api/v1/connections", json=body, headers=admin).json()["id"]
    r = client.post(f"/api/v1/connections/{repo_id}/test", headers=admin)
    assert r.json()["ok"] and "Object Lock COMPLIANCE for 2 day(s)" in r.json()["about"], r.text
    estate = Estate(runtime, repo_id, keep_last=1)
    now = utcnow()
    old, newest = (estate.add_point(now - timedelta(hours=2 - i), seed=i) for i in range(2))
    # The point shows its lock, and so does each copy.
    point = client.get(f"/api/v1/restore-points/{old}", headers=admin).json()
    until = datetime.fromisoformat(point["immutable_until"])
    assert abs((until - (now + timedelta(days=DAYS))).total_seconds()) < 120
    assert point["copies"][0]["immutable_until"] == point["immutable_until"]
    # Expiry keeps it (keep_last=1 would drop it), naming the store's date.
    r = client.post(f"/api/v1/repositories/{repo_id}/expire", headers=admin)
    with runtime.db.session() as session:
        session.get(Job, r.json()["job_id"]).params = {"repository_id": repo_id, "gc_grace_s": -60}
    load_handlers()
    run_jobs(Worker(runtime, "w", [], registry=product_registry, **FAST))
    with runtime.db.session() as session:
        job = session.get(Job, r.json()["job_id"])
        assert job.state == JobState.SUCCEEDED, job.error
        events = [e.message for e in job.events]
        assert any(e.startswith(f"restore point {old} stays: immutable until 20") for e in events)
        assert session.get(RestorePoint, old).status == "available"
    # The overview counts the server as having an immutable copy.
    from tests.web.conftest import sign_in

    assert sign_in(client, "admin", "admin-password-123").status_code == 303
    assert 'Immutable copy <span class="n">1</span>' in client.get("/").text
    # Deleting the point, shortening or dropping the lock, deleting the connection: refused,
    # for the admin too, with the date.
    r = client.delete(f"/api/v1/restore-points/{old}", headers=admin)
    assert r.status_code == 409 and "immutable until" in r.json()["detail"]
    for changed in (
        {**options, "immutable_days": 1},
        {k: v for k, v in options.items() if k != "immutable_days"},
    ):
        r = client.patch(f"/api/v1/connections/{repo_id}", json={"options": changed}, headers=admin)
        assert r.status_code == 409 and "cannot be shortened" in r.json()["detail"], r.text
    r = client.delete(f"/api/v1/connections/{repo_id}", headers=admin)
    assert r.status_code == 409, r.text
    assert "locked until 20" in r.json()["detail"]
    assert newest


def test_a_copy_into_an_immutable_target_is_locked_there(seaweedfs, tmp_path):
    from app.repository import FilesystemStore
    from app.repository.copy import copy_images, open_replica

    source = open_repository_in(
        FilesystemStore(tmp_path / "src"), label="src", key=ROOT_KEY, create=True, block_size=BS
    )
    m, image = backup(source, ["r", "t"], seed=4)
    target_store = s3_store(seaweedfs, tmp_path, bucket=seaweedfs.locked_bucket())
    target = open_replica(source, target_store, label="copy", key=ROOT_KEY, immutable_days=DAYS)
    assert target.immutable_days == DAYS and source.immutable_days is None
    copy_images(source, target, [m.id])
    with pytest.raises(RepositoryLocked):
        target.delete_manifest(m.id)
    for digest in m.digests():
        assert target_store.retention(chunk_key(digest)) is not None
    assert b"".join(target.read_image(target.load_manifest(m.id))) == image
