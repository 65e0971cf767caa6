"""Repository connections, retention + GC (expire jobs), verify jobs, usage and verified RPO,
through the API and the job engine, on the test database (SQLite or PostgreSQL)."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from app.composition import load_handlers, upkeep_sources
from app.db.models import (
    ExchangeServer,
    Job,
    LegalHold,
    Policy,
    PolicyTarget,
    RestorePoint,
    RestorePointCopy,
)
from app.db.types import utcnow
from app.domain.jobs import JobKind, JobState
from app.domain.protection import (
    Consistency,
    CopyLocation,
    ProtectionMethod,
    RestorePointStatus,
    Verification,
)
from app.jobs import Worker
from app.jobs.handlers import registry as product_registry
from app.jobs.scheduler import Scheduler
from app.notifications import Notifier
from app.repository import FilesystemStore, open_repository
from app.repository.chunks import chunk_key
from app.repository.store import open_repository_in
from tests.repository.conftest import corrupt, make_image, s3_store

FAST = {"lease_seconds": 5.0, "heartbeat_interval": 0.2, "poll_interval": 0.05, "retry_base_s": 0.0}
BS = 64 * 1024


@pytest.fixture
def runtime(app, client):
    return app.state.runtime


@pytest.fixture
def worker(runtime):
    load_handlers()
    return Worker(runtime, "repo-worker", [], registry=product_registry, **FAST)


def run_jobs(worker: Worker) -> list[int]:
    ran = []
    while (job_id := worker.run_once()) is not None:
        ran.append(job_id)
        assert len(ran) < 20
    return ran


@pytest.fixture(params=["filesystem", "s3"])
def peer(request):
    """Where the test's repository lives: a directory (None) or SeaweedFS."""
    return request.getfixturevalue("seaweedfs") if request.param == "s3" else None


def add_repository(
    client, admin, path: Path, encrypted: bool = False, runtime=None, peer=None
) -> int:
    body = {"name": f"repo-{path.name}", "kind": "repository"}
    if peer is None:
        body["options"] = {"path": str(path), "encrypted": encrypted}
        store = FilesystemStore(path)
    else:
        store = s3_store(peer, path)
        body["options"] = {
            "backend": "s3",
            "endpoint": peer.endpoint,
            "bucket": store.bucket,
            "prefix": store.prefix,
            "encrypted": encrypted,
        }
        body.update(username=peer.access_key, password=peer.secret_key)
    if runtime is not None:
        # Small blocks keep the images small; /test then opens what is there.
        open_repository_in(
            store,
            label="test",
            key=runtime.settings.root_key(),
            create=True,
            encrypted=encrypted,
            block_size=BS,
        )
    r = client.post("/api/v1/connections", json=body, headers=admin)
    assert r.status_code == 201, r.text
    repo_id = r.json()["id"]
    r = client.post(f"/api/v1/connections/{repo_id}/test", headers=admin)
    assert r.status_code == 200 and r.json()["ok"], r.text
    return repo_id


def test_repository_connection_is_validated_and_initialised_by_test(client, admin, tmp_path):
    # Saved without a path it stays untested; its test says what is missing.
    r = client.post("/api/v1/connections", headers=admin, json={"name": "r0", "kind": "repository"})
    assert r.status_code == 201 and r.json()["options"] == {"encrypted": False}
    r = client.post(f"/api/v1/connections/{r.json()['id']}/test", headers=admin)
    assert r.json()["ok"] is False and "options.path" in r.json()["message"]
    r = client.post(
        "/api/v1/connections",
        headers=admin,
        json={"name": "r1", "kind": "repository", "options": {"path": "/x", "colour": "blue"}},
    )
    assert r.status_code == 422 and "not ['colour']" in r.json()["detail"]
    r = client.post(
        "/api/v1/connections",
        headers=admin,
        json={"name": "r1", "kind": "repository", "options": {"path": "rel/dir"}},
    )
    assert r.status_code == 422 and "absolute" in r.json()["detail"]
    r = client.post(
        "/api/v1/connections",
        headers=admin,
        json={"name": "r1", "kind": "repository", "options": {"path": "/x", "encrypted": "yes"}},
    )
    assert r.status_code == 422
    repo_id = add_repository(client, admin, tmp_path / "lib", encrypted=True)
    config = (tmp_path / "lib" / "config").read_text()
    assert '"encrypted": true' in config and "wrapped_key" in config
    r = client.post(f"/api/v1/connections/{repo_id}/test", headers=admin)
    assert r.json()["ok"] and "encrypted" in r.json()["about"]
    assert client.get(f"/api/v1/connections/{repo_id}", headers=admin).json()["status"] == "ok"
    # A path that cannot be a directory fails the test with a reason, not a 500.
    (tmp_path / "file").write_text("x")
    body = {"name": "r2", "kind": "repository", "options": {"path": str(tmp_path / "file" / "d")}}
    bad = client.post("/api/v1/connections", json=body, headers=admin).json()["id"]
    r = client.post(f"/api/v1/connections/{bad}/test", headers=admin)
    assert r.status_code == 200 and r.json()["ok"] is False and "file" in r.json()["message"]
    assert client.get(f"/api/v1/connections/{bad}", headers=admin).json()["status"] == "failed"


def test_two_repository_connections_cannot_share_a_directory(client, admin, tmp_path):
    body = {"kind": "repository", "options": {"path": str(tmp_path / "lib")}}
    r = client.post("/api/v1/connections", json={**body, "name": "lib-a"}, headers=admin)
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/connections", json={**body, "name": "lib-b"}, headers=admin)
    assert r.status_code == 409 and "lib-a" in r.json()["detail"], r.text
    other = {"kind": "repository", "name": "lib-c", "options": {"path": str(tmp_path / "c")}}
    r = client.post("/api/v1/connections", json=other, headers=admin)
    assert r.status_code == 201, r.text
    r = client.patch(
        f"/api/v1/connections/{r.json()['id']}", json={"options": body["options"]}, headers=admin
    )
    assert r.status_code == 409, r.text


def test_repository_endpoints_need_the_right_role(client, headers_for, tmp_path, admin):
    from app.security.roles import Role

    repo_id = add_repository(client, admin, tmp_path / "lib")
    auditor = headers_for(Role.AUDITOR)
    assert client.get("/api/v1/repositories", headers=auditor).status_code == 200
    assert client.post(f"/api/v1/repositories/{repo_id}/expire", headers=auditor).status_code == 403
    assert client.get("/api/v1/repositories").status_code == 401
    assert client.get("/api/v1/repositories/999", headers=admin).status_code == 404


class Estate:
    """A repository with a policy and restore points whose images are really stored."""

    def __init__(self, runtime, repo_id: int, **policy_fields):
        self.runtime = runtime
        self.repo_id = repo_id
        with runtime.db.session() as session:
            server = ExchangeServer(name="ex01")
            session.add(server)
            session.flush()
            policy = Policy(
                name="daily",
                method=ProtectionMethod.VM_IMAGE,
                consistency=Consistency.CRASH,
                rpo_minutes=60,
                repository_id=repo_id,
                **policy_fields,
            )
            policy.targets = [PolicyTarget(server_id=server.id)]
            session.add(policy)
            session.flush()
            self.server_id, self.policy_id = server.id, policy.id
        self.images: dict[int, bytes] = {}

    def repo(self, session):
        return open_repository(session, self.repo_id, root_key=self.runtime.settings.root_key())

    def add_point(self, captured_at, seed: int, disks: int = 1, **fields) -> int:
        """A restore point with one repository copy (one image) per disk."""
        images = [make_image(["r", "t", "z", "r"], BS, seed=seed + 1000 * d) for d in range(disks)]
        with self.runtime.db.session() as session:
            repo = self.repo(session)
            point = RestorePoint(
                policy_id=self.policy_id,
                server_id=self.server_id,
                captured_at=captured_at,
                method=ProtectionMethod.VM_IMAGE,
                consistency=Consistency.CRASH,
                **fields,
            )
            for disk, image in enumerate(images):
                m = repo.write_image(
                    io.BytesIO(image), size=len(image), source_info={"seed": seed, "disk": disk}
                )
                repo.save_manifest(m)
                point.copies.append(
                    RestorePointCopy(
                        location=CopyLocation.REPOSITORY, connection_id=self.repo_id, reference=m.id
                    )
                )
                self.images[m.id] = image
            session.add(point)
            session.flush()
            return point.id


def test_expire_keeps_schedule_holds_and_compliance_then_gc_frees_the_rest(
    client, admin, runtime, worker, tmp_path, peer
):
    repo_id = add_repository(client, admin, tmp_path / "lib", runtime=runtime, peer=peer)
    estate = Estate(runtime, repo_id, keep_last=2)
    now = utcnow()
    ids = [estate.add_point(now - timedelta(hours=10 - i), seed=i, disks=2) for i in range(6)]
    held, compliant = ids[0], ids[1]
    with runtime.db.session() as session:
        session.add(
            LegalHold(
                name="case-1",
                reason="litigation",
                scope="restore_point",
                restore_point_id=held,
                created_by="legal",
            )
        )
        session.get(RestorePoint, compliant).retain_until = now + timedelta(days=30)
    r = client.post(f"/api/v1/repositories/{repo_id}/expire", headers=admin)
    assert r.status_code == 202
    with runtime.db.session() as session:
        session.get(Job, r.json()["job_id"]).params = {"repository_id": repo_id, "gc_grace_s": -60}
    run_jobs(worker)
    with runtime.db.session() as session:
        job = session.get(Job, r.json()["job_id"])
        assert job.state == JobState.SUCCEEDED, job.error
        events = [e.message for e in job.events]
        assert f"expired restore points: {ids[2]}, {ids[3]}" in events
        assert f"restore point {held} stays: it is under legal hold (case-1)" in events
        assert any(e.startswith(f"restore point {compliant} stays: compliance") for e in events)
        points = {p.id: p for p in session.scalars(select(RestorePoint))}
        assert [i for i in ids if points[i].status == RestorePointStatus.EXPIRED] == ids[2:4]
        repo = estate.repo(session)
        live = {c.reference for p in points.values() for c in p.copies if c.removed_at is None}
        assert set(repo.list_manifests()) == live
        needed = set()
        for manifest_id in live:
            needed |= repo.load_manifest(manifest_id).digests()
        stored = {k.rsplit("/", 1)[-1] for k in repo.store.list("chunks/")}
        assert stored == needed  # exactly what the expired ones alone needed is gone
        assert len(live) == 2 * 4
        for manifest_id in live:
            image = b"".join(repo.read_image(repo.load_manifest(manifest_id)))
            assert image == estate.images[manifest_id]
    repos = client.get("/api/v1/repositories", headers=admin).json()
    usage = repos[0]["usage"]
    assert usage["images"] == 8 and usage["last_gc_removed_chunks"] > 0
    assert usage["logical_bytes"] == 8 * 4 * BS and usage["dedup_ratio"] > 1


def test_expire_leaves_a_restore_point_a_queued_restore_will_read(
    client, admin, runtime, worker, tmp_path
):
    repo_id = add_repository(client, admin, tmp_path / "lib", runtime=runtime)
    estate = Estate(runtime, repo_id, keep_last=1)
    now = utcnow()
    old, _newest = (estate.add_point(now - timedelta(hours=2 - i), seed=i) for i in range(2))
    with runtime.db.session() as session:
        # Queued behind the expire (not claimable by this worker): it will read ``old``.
        session.add(
            Job(
                kind=JobKind.RESTORE,
                params={"restore_point_id": old, "mode": "disk"},
                required_capabilities=["not-this-worker"],
            )
        )
    r = client.post(f"/api/v1/repositories/{repo_id}/expire", headers=admin)
    assert r.status_code == 202
    run_jobs(worker)
    with runtime.db.session() as session:
        job = session.get(Job, r.json()["job_id"])
        assert job.state == JobState.SUCCEEDED, job.error
        events = [e.message for e in job.events]
        assert f"restore point {old} stays: a restore or verify job is reading it" in events
        point = session.get(RestorePoint, old)
        assert point.status == RestorePointStatus.AVAILABLE
        repo = estate.repo(session)
        for copy in point.copies:
            assert b"".join(repo.read_image(repo.load_manifest(copy.reference)))


def test_expire_leaves_an_image_a_download_reads(client, admin, runtime, worker, tmp_path, peer):
    repo_id = add_repository(client, admin, tmp_path / "lib", runtime=runtime, peer=peer)
    estate = Estate(runtime, repo_id, keep_last=1)
    now = utcnow()
    old, _newest = (estate.add_point(now - timedelta(hours=2 - i), seed=i) for i in range(2))
    with runtime.db.session() as session:
        repo = estate.repo(session)
        (copy,) = session.get(RestorePoint, old).copies
        release = repo.pin(copy.reference)  # a download of it is under way

    def expire() -> list[str]:
        r = client.post(f"/api/v1/repositories/{repo_id}/expire", headers=admin)
        run_jobs(worker)
        with runtime.db.session() as session:
            job = session.get(Job, r.json()["job_id"])
            assert job.state == JobState.SUCCEEDED, job.error
            return [e.message for e in job.events]

    assert f"restore point {old} stays: a download reads it" in expire()
    with runtime.db.session() as session:
        assert session.get(RestorePoint, old).status == RestorePointStatus.AVAILABLE
    assert b"".join(repo.read_image(repo.load_manifest(copy.reference)))
    release()  # the download ended
    assert f"expired restore points: {old}" in expire()
    assert copy.reference not in repo.list_manifests()


def test_verify_finds_damage_names_the_block_notifies_and_heals(
    client, admin, runtime, worker, tmp_path, peer, settings
):
    repo_id = add_repository(
        client, admin, tmp_path / "lib", encrypted=True, runtime=runtime, peer=peer
    )
    estate = Estate(runtime, repo_id)
    now = utcnow()
    good = estate.add_point(now - timedelta(minutes=30), seed=1)
    bad = estate.add_point(now - timedelta(minutes=10), seed=2, disks=2)
    with runtime.db.session() as session:
        repo = estate.repo(session)
        manifest = repo.load_manifest(session.get(RestorePoint, bad).copies[1].reference)
        victim = manifest.blocks[3]
        corrupt(repo, chunk_key(victim), at=-5)
    r = client.post(f"/api/v1/repositories/{repo_id}/verify", json={}, headers=admin)
    assert r.status_code == 202
    run_jobs(worker)
    with runtime.db.session() as session:
        job = session.get(Job, r.json()["job_id"])
        assert job.state == JobState.PARTIALLY_SUCCEEDED, [e.message for e in job.events]
        assert job.attempts == 1, [e.message for e in job.events]
        warnings = [e.message for e in job.events if e.level == "warning"]
        assert warnings[0] == (
            f"restore point {bad} is damaged: 1 block(s), first block 3 "
            f"({victim}): authentication failed"
        )
        point = session.get(RestorePoint, bad)
        assert point.verification == Verification.DAMAGED
        assert point.status == RestorePointStatus.DAMAGED
        found = point.details["verification"]["damaged_blocks"]
        assert found == [
            {"image": manifest.id, "block": 3, "digest": victim, "reason": "authentication failed"}
        ]
        assert session.get(RestorePoint, good).verification == Verification.VERIFIED
        notices = Notifier(settings, runtime.secrets)._damaged_points(session, utcnow())
        assert [n.event for _p, n in notices] == ["restore_point.damaged"]
        assert f"block 3 ({victim})" in notices[0][1].text
        # The damaged chunk was moved aside: a restore refuses the block, naming it.
        repo = estate.repo(session)
        with pytest.raises(Exception, match=f"block 3 \\({victim}\\)"):
            b"".join(repo.read_image(manifest))
    # Verified RPO counts only the verified restore point.
    rpo = client.get("/api/v1/repositories/verified-rpo", headers=admin).json()
    assert rpo[0]["verified_targets"] == 1 and 29 <= rpo[0]["verified_rpo_minutes"] <= 31
    assert rpo[0]["repository_id"] == repo_id and rpo[0]["breached"] is False
    # ...and on the overview.
    from tests.web.conftest import sign_in

    assert sign_in(client, "admin", "admin-password-123").status_code == 303
    overview = client.get("/").text
    assert "Verified RPO" in overview and ">daily</a>" in overview and "1 of 1" in overview
    # A new backup of the same data stores the block afresh; verify then finds it whole.
    estate.add_point(utcnow(), seed=2, disks=2)
    r = client.post(
        f"/api/v1/repositories/{repo_id}/verify", headers=admin, json={"restore_point_id": bad}
    )
    run_jobs(worker)
    with runtime.db.session() as session:
        assert session.get(Job, r.json()["job_id"]).state == JobState.SUCCEEDED
        point = session.get(RestorePoint, bad)
        assert point.verification == Verification.VERIFIED
        assert point.status == RestorePointStatus.AVAILABLE


def test_verify_request_is_checked(client, admin, runtime, tmp_path):
    repo_id = add_repository(client, admin, tmp_path / "lib")
    r = client.post(
        f"/api/v1/repositories/{repo_id}/verify", headers=admin, json={"restore_point_id": 12345}
    )
    assert r.status_code == 404
    r = client.post(f"/api/v1/repositories/{repo_id}/verify", headers=admin, json={"sample": 1.5})
    assert r.status_code == 422


def test_usage_measures_stored_against_logical(client, admin, runtime, tmp_path, peer):
    repo_id = add_repository(client, admin, tmp_path / "lib", runtime=runtime, peer=peer)
    estate = Estate(runtime, repo_id)
    estate.add_point(utcnow(), seed=1)
    estate.add_point(utcnow(), seed=1)  # the same image again: all deduplicated
    r = client.post(f"/api/v1/repositories/{repo_id}/usage", headers=admin)
    assert r.status_code == 200, r.text
    usage = r.json()
    assert usage["images"] == 2 and usage["chunks"] == 3
    assert usage["logical_bytes"] == 2 * 4 * BS
    assert usage["dedup_ratio"] > 2


def test_scheduler_queues_expire_and_sampled_verify_per_repository(
    client, admin, runtime, tmp_path
):
    repo_id = add_repository(client, admin, tmp_path / "lib")
    sched = Scheduler(runtime.db, sources=upkeep_sources(360, 1440, 0.1))
    now = utcnow()
    created = sched.tick(now)
    with runtime.db.session() as session:
        jobs = session.scalars(select(Job).where(Job.id.in_(created))).all()
        assert sorted(
            (j.kind, j.params.get("repository_id"), j.params.get("sample")) for j in jobs
        ) == [(JobKind.EXPIRE, repo_id, None), (JobKind.VERIFY, repo_id, 0.1)]
    assert sched.tick(now + timedelta(minutes=5)) == []


def test_an_s3_repository_connection_is_validated_sealed_and_tested(
    client, admin, runtime, seaweedfs
):
    bucket = seaweedfs.shared_bucket()
    base = {"kind": "repository", "username": seaweedfs.access_key}
    good = {"backend": "s3", "endpoint": seaweedfs.endpoint, "bucket": bucket, "prefix": "/a/b"}
    for options, words in [
        ({**good, "endpoint": "ftp://x"}, "http(s)://host"),
        ({**good, "endpoint": f"{seaweedfs.endpoint}/{bucket}"}, "the server only"),
        ({**good, "bucket": "No_Such"}, "bucket name"),
        ({**good, "path": "/x"}, "not ['path']"),
        ({**good, "backend": "tape"}, "options.backend"),
        ({**good, "max_parallel": 0}, "max_parallel"),
    ]:
        r = client.post(
            "/api/v1/connections", headers=admin, json={**base, "name": "s3x", "options": options}
        )
        assert r.status_code == 422 and words in r.json()["detail"], (options, r.text)
    r = client.post(
        "/api/v1/connections",
        headers=admin,
        json={**base, "name": "s3-a", "options": good, "password": seaweedfs.secret_key},
    )
    assert r.status_code == 201, r.text
    conn = r.json()
    assert conn["options"]["prefix"] == "a/b/" and conn["has_secret"]
    assert seaweedfs.secret_key not in r.text
    r = client.post(f"/api/v1/connections/{conn['id']}/test", headers=admin)
    assert r.json()["ok"], r.text
    assert f"s3://{bucket}/a/b/" in r.json()["message"]
    assert seaweedfs.client().head_object(Bucket=bucket, Key="a/b/config")["ContentLength"] > 0
    # The same bucket and prefix twice would have two connections collect each other's data.
    r = client.post(
        "/api/v1/connections", headers=admin, json={**base, "name": "s3-b", "options": good}
    )
    assert r.status_code == 409 and "s3-a" in r.json()["detail"]
    # A wrong secret fails the test with the server's reason, not a 500.
    r = client.post(
        "/api/v1/connections",
        headers=admin,
        json={
            **base,
            "name": "s3-c",
            "options": {**good, "prefix": "c"},
            "password": "not-the-secret",
        },
    )
    r = client.post(f"/api/v1/connections/{r.json()['id']}/test", headers=admin)
    assert r.status_code == 200 and r.json()["ok"] is False
    assert "s3://" in r.json()["message"] and "SignatureDoesNotMatch" in r.json()["message"]
