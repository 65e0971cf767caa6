"""Packs: small chunks many to a file, read back through the index, collected a pack at a
time, and harmless after a crash between writing a pack and its index."""

from __future__ import annotations

import os

import pytest

from app.repository import ChunkDamaged, open_repository_at
from app.repository.chunks import chunk_key
from app.repository.gc import collect_garbage
from app.repository.packs import PACK_LIMIT, decode_index, encode_index, index_key, pack_key
from app.repository.references import register_reference_source, unregister_reference_source
from tests.repository.conftest import ROOT_KEY, corrupt, reopen


def messages(n: int, seed: int = 0) -> list[bytes]:
    return [f"Subject: {seed}-{i}\r\n\r\n".encode() + os.urandom(300) for i in range(n)]


def packs_of(repo) -> list[str]:
    return [k.rsplit("/", 1)[-1] for k in repo.store.list("packs/")]


@pytest.fixture
def needed(monkeypatch):
    """The digests a reference source (the mail archive in the product) says are needed."""
    from app.repository import references

    monkeypatch.setattr(references, "_sources", {})
    monkeypatch.setattr(references, "REQUIRED_SOURCES", ("test-packs",))
    wanted: set[str] = set()
    register_reference_source("test-packs", lambda session, repo_id: set(wanted))
    yield wanted
    unregister_reference_source("test-packs")


def test_small_chunks_share_one_pack_and_read_back(repo):
    raws = messages(50)
    digests = [repo.put_chunk(r, durable=False, packed=True) for r in raws]
    assert packs_of(repo) == []  # nothing written before the flush
    repo.flush()
    assert len(packs_of(repo)) == 1
    assert list(repo.store.list("chunks/")) == []  # not one file per message
    other = reopen(repo)  # another process: finds them through the index
    for d, raw in zip(digests, raws, strict=True):
        assert repo.get_chunk(d) == raw
        assert other.get_chunk(d) == raw
        assert other.has_chunk(d)


def test_a_packed_chunk_is_stored_once(repo):
    raw = messages(1)[0]
    first = repo.put_chunk(raw, durable=False, packed=True)
    assert repo.put_chunk(raw, durable=False, packed=True) == first  # in the open pack
    repo.flush()
    assert repo.put_chunk(raw, durable=False, packed=True) == first  # in a written pack
    assert reopen(repo).put_chunk(raw, durable=False, packed=True) == first
    repo.flush()
    assert len(packs_of(repo)) == 1
    loose = repo.put_chunk(b"stored loose before packs existed")
    assert repo.get_chunk(loose) == b"stored loose before packs existed"


def test_large_objects_stay_loose(repo):
    big = os.urandom(PACK_LIMIT + 1)
    digest = repo.put_chunk(big, durable=False, packed=True)
    repo.flush()
    assert repo.store.exists(chunk_key(digest)) and packs_of(repo) == []
    assert repo.get_chunk(digest) == big


def test_encrypted_packs_hide_the_messages(tmp_path):
    repo = open_repository_at(tmp_path / "r", key=ROOT_KEY, create=True, encrypted=True)
    repo.put_chunk(b"Subject: quarterly numbers\r\n\r\nconfidential", packed=True)
    repo.flush()
    (pack,) = packs_of(repo)
    assert b"confidential" not in repo.store.get(pack_key(pack))


def test_a_damaged_packed_chunk_is_named(repo):
    raws = messages(3)
    digests = [repo.put_chunk(r, packed=True) for r in raws]
    repo.flush()
    (pack,) = packs_of(repo)
    victim = decode_index(repo.store.get(index_key(pack)))[1]
    corrupt(repo, pack_key(pack), at=victim.offset + victim.length - 3)
    with pytest.raises(ChunkDamaged) as caught:
        reopen(repo).get_chunk(victim.digest)
    assert caught.value.digest == victim.digest
    assert reopen(repo).get_chunk(digests[0]) == raws[0]  # its neighbours are unharmed


def test_gc_removes_packs_nobody_needs_and_repacks_mostly_dead_ones(tmp_path, needed):
    repo = open_repository_at(tmp_path / "r", create=True, id=7)
    dead_pack = [repo.put_chunk(r, packed=True) for r in messages(20, seed=1)]
    repo.flush()
    mixed_raws = messages(20, seed=2)
    mixed = [repo.put_chunk(r, packed=True) for r in mixed_raws]
    repo.flush()
    kept_raws = messages(20, seed=3)
    kept = [repo.put_chunk(r, packed=True) for r in kept_raws]
    repo.flush()
    assert len(packs_of(repo)) == 3
    needed.update(mixed[:5] + kept)

    young = collect_garbage(repo, object(), grace_s=300)
    assert young.removed_packs == 0 and young.kept_young == 35  # just written: all spared

    report = collect_garbage(repo, object(), grace_s=-60)
    assert report.removed_packs == 2 and report.repacked_packs == 1
    assert report.removed_chunks == 20 + 15
    assert len(packs_of(repo)) == 2  # the needed pack, and the repacked remainder
    for r in (repo, reopen(repo)):
        for d, raw in zip(mixed[:5] + kept, mixed_raws[:5] + kept_raws, strict=True):
            assert r.get_chunk(d) == raw
        for d in dead_pack + mixed[5:]:
            assert not r.has_chunk(d)
            with pytest.raises(ChunkDamaged, match="missing"):
                r.get_chunk(d)


def test_gc_spares_what_a_running_backup_uses_again(tmp_path, needed):
    repo = open_repository_at(tmp_path / "r", create=True, id=7)
    raw = messages(1)[0]
    digest = repo.put_chunk(raw, packed=True)
    repo.flush()
    os.utime(repo.store.root / pack_key(packs_of(repo)[0]), (1, 1))  # long untouched
    with repo.writing():
        assert repo.put_chunk(raw, durable=False, packed=True) == digest  # used again
        collect_garbage(repo, object(), grace_s=0)  # not yet needed by the archive
        repo.flush()
        needed.add(digest)
    assert reopen(repo).get_chunk(digest) == raw


def test_a_failed_backup_leaves_only_garbage(tmp_path, needed):
    repo = open_repository_at(tmp_path / "r", create=True, id=7)
    with pytest.raises(RuntimeError), repo.writing():
        stored = repo.put_chunk(b"never named by the archive", durable=False, packed=True)
        raise RuntimeError("the mail server went away")
    assert list(repo.store.list("writers/")) == []  # its record ended with it
    repo.flush()  # a later backup through the same handle writes the open pack
    assert reopen(repo).has_chunk(stored)
    report = collect_garbage(repo, object(), grace_s=-60)
    assert report.removed_chunks == 1 and packs_of(repo) == []


def test_a_crash_between_pack_and_index_is_harmless(tmp_path, needed):
    repo = open_repository_at(tmp_path / "r", create=True, id=7)
    raws = messages(4)
    digests = [repo.put_chunk(r, packed=True) for r in raws]
    repo.flush()
    (pack,) = packs_of(repo)
    entries = decode_index(repo.store.get(index_key(pack)))
    # A pack whose index never made it (crash after the pack).
    orphan = "ab" * 16
    repo.store.put(pack_key(orphan), repo.store.get(pack_key(pack)))
    # An index whose pack never reached the disk whole (crash before the data did).
    short = "cd" * 16
    repo.store.put(pack_key(short), b"x" * 10)
    repo.store.put(index_key(short), encode_index(entries))
    other = reopen(repo)
    assert other.packs.locate(digests[0]) == (pack, entries[0].offset, entries[0].length)
    # A torn index is not trusted either.
    torn = "ef" * 16
    repo.store.put(pack_key(torn), repo.store.get(pack_key(pack)))
    repo.store.put(index_key(torn), encode_index(entries)[:-5])
    assert reopen(repo).get_chunk(digests[2]) == raws[2]

    needed.update(digests)
    report = collect_garbage(repo, object(), grace_s=-60)
    # The orphan and the short one go (what they name is in the good pack); the torn
    # index's pack may hold what nothing else does: kept, and reported.
    assert sorted(packs_of(repo)) == sorted([pack, torn])
    assert sorted(k.removeprefix("index/") for k in repo.store.list("index/")) == sorted(
        [pack, torn]
    )
    assert report.removed_packs == 2 and report.damaged_packs == [torn]
    for d, raw in zip(digests, raws, strict=True):
        assert reopen(repo).get_chunk(d) == raw


def test_a_chunk_taken_after_it_was_reused_is_found_missing_and_stored_again(tmp_path):
    """What a mail commit checks under the gc lock: a garbage collection that removed the
    pack between the reuse and the commit leaves the digest missing; storing it again
    (the batch still holds the message) makes it readable before the database names it."""
    repo = open_repository_at(tmp_path / "r", create=True, id=7)
    raw = messages(1)[0]
    digest = repo.put_chunk(raw, packed=True)
    repo.flush()
    (pack,) = packs_of(repo)
    assert repo.put_chunk(raw, durable=False, packed=True) == digest  # reused: pack touched
    assert repo.missing_chunks([digest]) == set()
    from app.repository.packs import remove_pack

    remove_pack(repo.store, pack)  # a collection on another host sweeps it now
    assert repo.missing_chunks([digest]) == {digest}
    repo.put_chunk(raw, durable=False, packed=True)  # its pack is gone: stored anew
    repo.flush()
    assert repo.missing_chunks([digest]) == set()
    assert reopen(repo).get_chunk(digest) == raw and packs_of(repo) != [pack]
