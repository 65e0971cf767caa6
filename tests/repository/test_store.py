"""The repository's chunk store and images: round trips, dedup, zero blocks, damage."""

from __future__ import annotations

import io

import pytest

from app.repository import (
    BLOCK_SIZE,
    ChunkDamaged,
    RepositoryError,
    open_repository_at,
)
from app.repository.chunks import chunk_key
from tests.repository.conftest import ROOT_KEY, corrupt, make_image


def chunk_files(repo) -> list[str]:
    return list(repo.store.list("chunks/"))


def test_put_and_get_chunk_round_trip(repo):
    data = b"hello repository" * 1000
    digest = repo.put_chunk(data)
    assert repo.has_chunk(digest)
    assert repo.get_chunk(digest) == data
    assert repo.put_chunk(data) == digest
    assert len(chunk_files(repo)) == 1


def test_encrypted_chunks_hide_plain_data_and_names(tmp_path):
    repo = open_repository_at(tmp_path / "r", key=ROOT_KEY, create=True)
    assert repo.encrypted
    data = b"secret mail body " * 500
    digest = repo.put_chunk(data)
    stored = (tmp_path / "r" / chunk_key(digest)).read_bytes()
    assert b"secret mail body" not in stored
    plain = open_repository_at(tmp_path / "p", create=True)
    # Keyed digests: the name does not reveal the plain blake3 of known content.
    assert plain.put_chunk(data) != digest


def test_encrypted_repository_needs_the_service_secret(tmp_path):
    repo = open_repository_at(tmp_path / "r", key=ROOT_KEY, create=True)
    digest = repo.put_chunk(b"x" * 100)
    with pytest.raises(RepositoryError, match="encrypted"):
        open_repository_at(tmp_path / "r")
    with pytest.raises(RepositoryError, match="BULWARK_SECRET_KEY"):
        open_repository_at(tmp_path / "r", key=b"another key")
    again = open_repository_at(tmp_path / "r", key=ROOT_KEY)
    assert again.get_chunk(digest) == b"x" * 100


def test_opening_a_missing_or_foreign_directory_is_refused(tmp_path):
    with pytest.raises(RepositoryError, match="no Bulwark repository"):
        open_repository_at(tmp_path / "none")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("someone else's")
    with pytest.raises(RepositoryError, match="not empty"):
        open_repository_at(tmp_path / "busy", create=True)


def test_image_round_trip_byte_for_byte(repo):
    image = make_image(["r", "z", "t", "r", "z"], BLOCK_SIZE, tail=12345)
    manifest = repo.write_image(io.BytesIO(image), size=len(image), source_info={"vm": "ex01"})
    manifest_id = repo.save_manifest(manifest)
    loaded = repo.load_manifest(manifest_id)
    assert loaded.size == len(image)
    assert loaded.read_mode == "full"
    assert loaded.source == {"vm": "ex01"}
    assert loaded.blocks[1] is None and loaded.blocks[4] is None
    assert b"".join(repo.read_image(loaded)) == image
    # Ranged reads across block boundaries.
    start, length = BLOCK_SIZE - 100, 2 * BLOCK_SIZE + 300
    assert b"".join(repo.read_image(loaded, start, length)) == image[start : start + length]
    assert b"".join(repo.read_image(loaded, len(image) - 10)) == image[-10:]


def test_zero_blocks_are_not_stored(repo):
    image = bytes(3 * BLOCK_SIZE)
    manifest = repo.write_image(io.BytesIO(image), size=len(image), source_info={})
    repo.save_manifest(manifest)
    assert manifest.blocks == [None, None, None]
    assert chunk_files(repo) == []
    assert b"".join(repo.read_image(manifest)) == image


def test_identical_blocks_are_stored_once_across_images(repo):
    a = make_image(["r", "t", "r"], BLOCK_SIZE, seed=1)
    b = a[: 2 * BLOCK_SIZE] + make_image(["r"], BLOCK_SIZE, seed=2)
    m1 = repo.write_image(io.BytesIO(a), size=len(a), source_info={"vm": "a"})
    repo.save_manifest(m1)
    m2 = repo.write_image(
        iter([b[i : i + 1000_000] for i in range(0, len(b), 1000_000)]),
        size=len(b),
        source_info={"vm": "b"},
    )
    repo.save_manifest(m2)
    assert m2.stats["reused_chunks"] == 2 and m2.stats["new_chunks"] == 1
    assert len(chunk_files(repo)) == 4
    assert b"".join(repo.read_image(m2)) == b


def test_changed_blocks_reuse_the_previous_image(repo):
    image = bytearray(make_image(["r", "t", "z", "r"], BLOCK_SIZE))
    first = repo.write_image(io.BytesIO(bytes(image)), size=len(image), source_info={})
    repo.save_manifest(first)
    image[BLOCK_SIZE * 2 + 10 : BLOCK_SIZE * 2 + 20] = b"x" * 10

    class CountingReader(io.BytesIO):
        read_bytes = 0

        def read(self, n=-1):
            data = super().read(n)
            CountingReader.read_bytes += len(data)
            return data

        def readinto(self, buffer):
            n = super().readinto(buffer)
            CountingReader.read_bytes += n
            return n

    second = repo.write_image(
        CountingReader(bytes(image)),
        size=len(image),
        source_info={},
        previous=first,
        changed=[(BLOCK_SIZE * 2 + 10, 10)],
    )
    repo.save_manifest(second)
    assert CountingReader.read_bytes == BLOCK_SIZE
    assert second.read_mode == "changed-blocks"
    assert second.stats["unchanged_blocks"] == 3 and second.stats["read_bytes"] == BLOCK_SIZE
    assert second.previous_id == first.id
    assert second.blocks[:2] == first.blocks[:2] and second.blocks[3] == first.blocks[3]
    assert b"".join(repo.read_image(repo.load_manifest(second.id))) == bytes(image)
    assert b"".join(repo.read_image(first)) != bytes(image)


def test_a_source_shorter_than_its_size_is_an_error(repo):
    with pytest.raises(ValueError, match="ended at byte 100"):
        repo.write_image(io.BytesIO(b"a" * 100), size=200, source_info={})
    assert list(repo.store.list("writers/")) == []


def test_progress_reports_bytes_done(repo):
    seen = []
    image = make_image(["t", "t"], BLOCK_SIZE, tail=5)
    repo.write_image(io.BytesIO(image), size=len(image), source_info={}, progress=seen.append)
    assert seen[-1] == len(image) and seen == sorted(seen)


def test_corrupted_chunk_is_refused_naming_the_block(repo):
    image = make_image(["t", "r", "t"], BLOCK_SIZE, seed=5)
    image = image[: BLOCK_SIZE * 2] + make_image(["r"], BLOCK_SIZE, seed=6)
    manifest = repo.write_image(io.BytesIO(image), size=len(image), source_info={})
    repo.save_manifest(manifest)
    victim = manifest.blocks[1]
    corrupt(repo, chunk_key(victim))
    with pytest.raises(ChunkDamaged) as caught:
        b"".join(repo.read_image(manifest))
    assert caught.value.index == 1 and caught.value.digest == victim
    assert f"block 1 ({victim})" in str(caught.value) and manifest.id in str(caught.value)
    damaged = repo.verify_image(manifest)
    assert [(d.index, d.digest) for d in damaged] == [(1, victim)]
    # Reading only undamaged blocks still works.
    assert b"".join(repo.read_image(manifest, 0, BLOCK_SIZE)) == image[:BLOCK_SIZE]


def test_missing_chunk_is_damage(repo):
    image = make_image(["r"], BLOCK_SIZE, seed=9)
    manifest = repo.write_image(io.BytesIO(image), size=len(image), source_info={})
    repo.save_manifest(manifest)
    repo.store.delete(chunk_key(manifest.blocks[0]))
    with pytest.raises(ChunkDamaged, match="missing"):
        b"".join(repo.read_image(manifest))


def test_altered_manifest_is_refused(tmp_path):
    repo = open_repository_at(tmp_path / "r", create=True)
    image = make_image(["r", "t"], BLOCK_SIZE)
    manifest = repo.write_image(io.BytesIO(image), size=len(image), source_info={})
    mid = repo.save_manifest(manifest)
    path = tmp_path / "r" / "manifests" / mid
    raw = bytearray(path.read_bytes())
    assert raw[0] == 1  # compressed, not encrypted
    import zstandard

    doc = zstandard.ZstdDecompressor().decompress(bytes(raw[1:]))
    doc = doc.replace(manifest.blocks[0].encode(), manifest.blocks[1].encode(), 1)
    path.write_bytes(bytes([1]) + zstandard.ZstdCompressor().compress(doc))
    with pytest.raises(RepositoryError, match="altered"):
        repo.load_manifest(mid)


def test_filesystem_store_put_is_whole_or_nothing(tmp_path):
    from app.repository import FilesystemStore, ObjectMissing

    store = FilesystemStore(tmp_path)
    store.put("chunks/abcd/abcdef", b"old")
    with pytest.raises(TypeError):
        store.put("chunks/abcd/abcdef", [b"new ", object()])  # fails half-way through
    assert store.get("chunks/abcd/abcdef") == b"old"
    assert sorted(p.name for p in (tmp_path / "chunks" / "abcd").iterdir()) == ["abcdef"]
    store.put("manifests/x1", [b"a", memoryview(b"bc")], durable=False)
    store.flush()
    assert store.get("manifests/x1") == b"abc"
    assert sorted(store.list()) == ["chunks/abcd/abcdef", "manifests/x1"]
    assert list(store.list("manifests/")) == ["manifests/x1"]
    store.delete("manifests/x1")
    assert not store.exists("manifests/x1") and not store.touch("manifests/x1")
    with pytest.raises(ObjectMissing):
        store.get("manifests/x1")
    with pytest.raises(ValueError, match="invalid object key"):
        store.put("../escape", b"x")


def test_changed_blocks_of_a_resized_image_read_what_the_previous_cannot_give(repo):
    image = make_image(["r", "t", "r"], BLOCK_SIZE, seed=3)
    first = repo.write_image(io.BytesIO(image), size=len(image), source_info={})
    repo.save_manifest(first)
    for new in (image[: BLOCK_SIZE + 1000], image + make_image(["t"], BLOCK_SIZE, tail=77)):
        m = repo.write_image(
            io.BytesIO(new), size=len(new), source_info={}, previous=first, changed=[]
        )
        repo.save_manifest(m)
        assert b"".join(repo.read_image(repo.load_manifest(m.id))) == new
