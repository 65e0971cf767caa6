"""Copying images between repositories (filesystem -> S3, S3 -> S3, filesystem ->
filesystem): byte for byte, incremental, resumable after a kill, readable on the target."""

from __future__ import annotations

import io

import pytest

from app.repository.chunks import chunk_key
from app.repository.copy import copy_images, open_replica
from app.repository.errors import RepositoryError
from tests.repository.conftest import ROOT_KEY, make_image, s3_store

BS = 64 * 1024


@pytest.fixture(params=["fs->s3", "s3->s3", "fs->fs"])
def pair(request, tmp_path):
    return make_pair(request, tmp_path, request.param)


@pytest.fixture
def to_s3(request, tmp_path):
    """filesystem -> S3 only: what the other pairs would show again at their cost."""
    return make_pair(request, tmp_path, "fs->s3")


def make_pair(request, tmp_path, which: str):
    from app.repository import FilesystemStore
    from app.repository.store import open_repository_in

    src_kind, dst_kind = which.split("->")
    if src_kind == "s3":
        store = s3_store(request.getfixturevalue("seaweedfs"), tmp_path)
    else:
        store = FilesystemStore(tmp_path / "source")
    source = open_repository_in(
        store, label="source", key=ROOT_KEY, create=True, encrypted=True, block_size=BS
    )
    if dst_kind == "s3":
        target_store = s3_store(request.getfixturevalue("seaweedfs"), tmp_path)
    else:
        target_store = FilesystemStore(tmp_path / "target")
    return source, target_store


def backup(repo, kinds, seed):
    image = make_image(kinds, BS, seed=seed)
    m = repo.write_image(io.BytesIO(image), size=len(image), source_info={})
    repo.save_manifest(m)
    return m, image


def test_a_copy_is_incremental_and_reads_back_byte_for_byte(pair):
    source, target_store = pair
    first, image1 = backup(source, ["r", "t", "z", "r"], seed=1)
    target = open_replica(source, target_store, label="target", key=ROOT_KEY)
    seen = []
    report = copy_images(source, target, [first.id], progress=lambda b, r: seen.append(b))
    assert report.copied == [first.id] and report.chunks_copied == len(first.digests())
    assert seen[-1] == report.bytes_copied > 0
    assert b"".join(target.read_image(target.load_manifest(first.id))) == image1
    # A second image sharing blocks: only the new blocks travel.
    second, image2 = backup(source, ["r", "t", "z", "t"], seed=1)
    report = copy_images(source, target, [first.id, second.id])
    assert report.images_present == 1 and report.copied == [second.id]
    assert report.chunks_copied == len(second.digests() - first.digests())
    assert b"".join(target.read_image(target.load_manifest(second.id))) == image2
    assert target.verify_image(target.load_manifest(second.id)) == []


def test_a_killed_copy_resumes_without_copying_again_what_arrived(to_s3):
    source, target_store = to_s3
    m, image = backup(source, ["r", "r", "t", "r", "t", "r"], seed=2)
    target = open_replica(source, target_store, label="target", key=ROOT_KEY)

    class Killed(Exception):
        pass

    def die_after_three(done, _rate):
        if done and len(arrived()) >= 3:
            raise Killed

    def arrived():
        return set(target.store.list("chunks/"))

    with pytest.raises(Killed):
        copy_images(source, target, [m.id], progress=die_after_three, threads=1)
    assert m.id not in target.list_manifests()  # never a manifest before its chunks
    before = len(arrived())
    report = copy_images(source, target, [m.id])
    assert report.chunks_present == before
    assert report.chunks_copied == len(m.digests()) - before
    assert b"".join(target.read_image(target.load_manifest(m.id))) == image


def test_a_target_holding_another_repository_is_refused(to_s3, tmp_path):
    from app.repository.store import open_repository_in

    source, target_store = to_s3
    open_repository_in(target_store, label="other", key=ROOT_KEY, create=True)
    with pytest.raises(RepositoryError, match="another repository"):
        open_replica(source, target_store, label="target", key=ROOT_KEY)


def test_damage_on_the_source_leaves_the_copy_whole_and_readable(to_s3):
    source, target_store = to_s3
    m, image = backup(source, ["r", "t", "r"], seed=3)
    target = open_replica(source, target_store, label="target", key=ROOT_KEY)
    copy_images(source, target, [m.id])
    victim = m.blocks[1]
    data = bytearray(source.store.get(chunk_key(victim)))
    data[-3] ^= 0xFF
    source.store.delete(chunk_key(victim))
    source.store.put(chunk_key(victim), bytes(data))
    assert [d.digest for d in source.verify_image(m)] == [victim]
    assert target.verify_image(target.load_manifest(m.id)) == []
    assert b"".join(target.read_image(target.load_manifest(m.id))) == image
