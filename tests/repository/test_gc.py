"""Garbage collection: frees exactly the unneeded chunks, spares a running backup's, and
leaves a consistent store after a writer is killed mid-image."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.repository import ManifestInUse, open_repository_at
from app.repository.chunks import chunk_key
from app.repository.errors import RepositoryError
from app.repository.gc import collect_garbage
from app.repository.references import register_reference_source, unregister_reference_source
from tests.repository.conftest import make_image

BS = 64 * 1024
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small(new_repository):
    return new_repository(block_size=BS)


def backup(repo, kinds, seed, previous=None, changed=None):
    image = make_image(kinds, BS, seed=seed)
    m = repo.write_image(
        io.BytesIO(image), size=len(image), source_info={}, previous=previous, changed=changed
    )
    repo.save_manifest(m)
    return m, image


def chunks(repo) -> set[str]:
    return {k.rsplit("/", 1)[-1] for k in repo.store.list("chunks/")}


def test_gc_frees_exactly_the_chunks_of_deleted_images(small):
    a, _ = backup(small, ["r", "t", "r"], seed=1)
    b, image_b = backup(small, ["r", "r"], seed=2)
    shared = small.put_chunk(make_image(["r"], BS, seed=1)[:BS])  # == a's first block
    assert shared == a.blocks[0]
    small.delete_manifest(a.id)
    report = collect_garbage(small, grace_s=-60, images_only=True)
    assert chunks(small) == b.digests()
    assert report.removed_chunks == len(a.digests() - b.digests())
    assert report.remaining_chunks == len(b.digests())
    assert b"".join(small.read_image(b)) == image_b


def test_gc_spares_chunks_younger_than_the_grace_period(small):
    a, _ = backup(small, ["r", "t"], seed=3)
    small.delete_manifest(a.id)
    report = collect_garbage(small, grace_s=3600, images_only=True)
    assert report.removed_chunks == 0 and report.kept_young == 2
    assert chunks(small) == a.digests()


def test_gc_spares_a_running_backup_and_its_reused_chunks(small, backend):
    if backend == "s3":
        pytest.skip("an S3 object's time cannot be moved back (nor forward: see s3.py)")
    first, image = backup(small, ["r", "t", "r"], seed=4)
    # Age every chunk: without the writer's protection all would be garbage.
    old = time.time() - 7200
    for info in small.store.stat_all("chunks/"):
        os.utime(small.store.root / info.key, (old, old))
    unsaved = small.write_image(io.BytesIO(image), size=len(image), source_info={})
    small.delete_manifest(first.id)
    collect_garbage(small, grace_s=0, images_only=True)
    # The unsaved image reused every chunk (touched them), so none was swept.
    assert chunks(small) == unsaved.digests()
    small.save_manifest(unsaved)
    assert b"".join(small.read_image(unsaved)) == image


def test_an_image_a_running_backup_builds_on_cannot_be_deleted(small):
    first, image = backup(small, ["r", "t"], seed=5)
    running = small.write_image(
        io.BytesIO(image), size=len(image), source_info={}, previous=first, changed=[]
    )
    with pytest.raises(ManifestInUse):
        small.delete_manifest(first.id)
    small.save_manifest(running)
    small.delete_manifest(first.id)
    assert small.list_manifests() == [running.id]


def test_reference_sources_keep_their_chunks(tmp_path, small, monkeypatch):
    from app.repository import references

    # Only this test's source (the product's own sources need a real database session).
    monkeypatch.setattr(references, "_sources", {})
    monkeypatch.setattr(references, "REQUIRED_SOURCES", ("test-mail",))
    kept = small.put_chunk(b"a mail message")
    dropped = small.put_chunk(b"an expired mail message")
    small.id = 42
    register_reference_source("test-mail", lambda session, repo_id: [kept] if repo_id == 42 else [])
    try:
        with pytest.raises(RepositoryError, match="connection and a database session"):
            collect_garbage(small, None, grace_s=-60)
        report = collect_garbage(small, object(), grace_s=-60)
    finally:
        unregister_reference_source("test-mail")
    assert chunks(small) == {kept}
    assert dropped not in chunks(small)
    assert report.sources == {"test-mail": 1}


def test_gc_refuses_to_sweep_past_an_unreadable_manifest(small):
    a, _ = backup(small, ["r"], seed=6)
    small.store.delete(f"manifests/{a.id}")
    small.store.put(f"manifests/{a.id}", b"\x00garbage")
    with pytest.raises(RepositoryError, match="unreadable"):
        collect_garbage(small, grace_s=-60, images_only=True)
    assert chunks(small) == a.digests()


def test_killed_writer_leaves_only_garbage_that_gc_removes(tmp_path):
    repo = open_repository_at(tmp_path / "repo", create=True, block_size=BS)
    kept, image = backup(repo, ["r", "t", "z", "r"], seed=7)
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.repository.crash_writer", str(tmp_path / "repo"), str(ready)],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, "the writer ended before it was killed"
            assert time.monotonic() < deadline, "the writer never got going"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # Only chunks (whole ones) and the dead writer's record were added; no manifest.
    assert repo.list_manifests() == [kept.id]
    assert len(chunks(repo)) > len(kept.digests())
    assert [w for w in repo.active_writers()] == []  # its process is gone
    for info in repo.store.stat_all("chunks/"):
        assert repo.get_chunk(info.key.rsplit("/", 1)[-1])  # every stored chunk is whole
    report = collect_garbage(repo, grace_s=-60, images_only=True)
    assert report.removed_chunks > 0
    assert chunks(repo) == kept.digests()
    assert not [p for p in (tmp_path / "repo").rglob(".tmp-*")]
    assert list(repo.store.list("writers/")) == []  # the dead writer's record is gone too
    assert b"".join(repo.read_image(repo.load_manifest(kept.id))) == image
    assert repo.verify_image(kept) == []


def test_missing_chunk_at_save_time_refuses_the_manifest(small):
    image = make_image(["r", "t"], BS, seed=8)
    m = small.write_image(io.BytesIO(image), size=len(image), source_info={})
    small.store.delete(chunk_key(m.blocks[1]))
    with pytest.raises(Exception, match="missing when the image was saved"):
        small.save_manifest(m)
    assert small.list_manifests() == []
    small.abandon(m)
    assert list(small.store.list("writers/")) == []


def test_gc_refuses_to_run_without_the_mail_reference_source(small, monkeypatch):
    """Archived mail is kept alive only by the mail archive's reference source: collection
    without it (a process that never imported app.mailboxes.store) must not sweep it."""
    from app.repository import references

    monkeypatch.setattr(references, "_sources", {})  # no source registered in this process
    archived = small.put_chunk(b"an archived mail message")
    small.id = 42
    with pytest.raises(RepositoryError, match="mail"):
        collect_garbage(small, object(), grace_s=-60)
    assert chunks(small) == {archived}


def test_an_entry_point_without_the_mail_import_cannot_sweep_archived_mail(tmp_path):
    """The whole path in a fresh interpreter: only the repository is imported, as a tool or
    a new entry point might; collection refuses, and the archived message stays."""
    script = (
        "import sys\n"
        "from app.repository import RepositoryError, open_repository_at\n"
        "from app.repository.gc import collect_garbage\n"
        "repo = open_repository_at(sys.argv[1], create=True, id=7)\n"
        "digest = repo.put_chunk(b'archived mail')\n"
        "try:\n"
        "    collect_garbage(repo, object(), grace_s=-60)\n"
        "except RepositoryError as exc:\n"
        "    print('refused:', exc)\n"
        "print('kept' if repo.has_chunk(digest) else 'swept')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "repo")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "refused:" in out and "mail" in out
    assert out.strip().endswith("kept")
