"""Packs describe themselves (issue 13, defects 6 and 7): each chunk is framed with its
digest and length, so a deleted or damaged index costs nothing, a cut pack loses only what
lies past the cut, and garbage collection never sweeps a pack it cannot account for."""

from __future__ import annotations

import os

import pytest

from app.repository import ChunkDamaged, open_repository_at
from app.repository.gc import collect_garbage
from app.repository.packs import (
    FRAME_SIZE,
    decode_index,
    encode_index,
    index_key,
    pack_key,
    scan_pack,
)
from app.repository.references import register_reference_source, unregister_reference_source
from tests.repository.conftest import ROOT_KEY


def messages(n: int, seed: int = 0) -> list[bytes]:
    return [f"Subject: {seed}-{i}\r\n\r\n".encode() + os.urandom(400) for i in range(n)]


@pytest.fixture
def needed(monkeypatch):
    from app.repository import references

    monkeypatch.setattr(references, "_sources", {})
    monkeypatch.setattr(references, "REQUIRED_SOURCES", ("test-damage",))
    wanted: set[str] = set()
    register_reference_source("test-damage", lambda session, repo_id: set(wanted))
    yield wanted
    unregister_reference_source("test-damage")


@pytest.fixture
def packed(tmp_path, needed):
    """An encrypted repository with one pack of 40 needed messages, long untouched."""
    repo = open_repository_at(tmp_path / "r", key=ROOT_KEY, create=True, encrypted=True, id=3)
    raws = messages(40)
    digests = [repo.put_chunk(r, durable=False, packed=True) for r in raws]
    repo.flush()
    (key,) = list(repo.store.list("packs/"))
    pack = key.rsplit("/", 1)[-1]
    old = (1_000_000, 1_000_000)
    os.utime(repo.store.root / pack_key(pack), old)
    os.utime(repo.store.root / index_key(pack), old)
    needed.update(digests)
    return repo, pack, raws, digests


def fresh(repo):
    return open_repository_at(repo.store.root, key=ROOT_KEY, id=repo.id)


def readable(repo, digests, raws) -> int:
    count = 0
    for d, raw in zip(digests, raws, strict=True):
        try:
            assert repo.get_chunk(d) == raw
            count += 1
        except ChunkDamaged:
            pass
    return count


def test_a_deleted_index_does_not_make_gc_sweep_live_mail(packed):
    repo, pack, raws, digests = packed
    repo.store.delete(index_key(pack))
    assert readable(fresh(repo), digests, raws) == 40  # found by its frames meanwhile
    report = collect_garbage(fresh(repo), object(), grace_s=0)
    assert report.removed_packs == 0 and report.rebuilt_indexes == [pack]
    assert report.damaged_rebuilt == []
    assert repo.store.exists(pack_key(pack)) and repo.store.exists(index_key(pack))
    assert readable(fresh(repo), digests, raws) == 40


def test_a_flipped_bit_in_an_index_spoils_nothing(packed):
    repo, pack, raws, digests = packed
    path = repo.store.root / index_key(pack)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    assert readable(fresh(repo), digests, raws) == 40
    report = collect_garbage(fresh(repo), object(), grace_s=0)
    assert report.rebuilt_indexes == [pack] and report.removed_packs == 0
    decode_index(repo.store.get(index_key(pack)))  # whole again
    assert readable(fresh(repo), digests, raws) == 40


def test_a_truncated_pack_loses_only_what_lies_past_the_cut(packed):
    repo, pack, raws, digests = packed
    entries = decode_index(repo.store.get(index_key(pack)))
    cut = entries[25].offset + 7  # inside the 26th message
    path = repo.store.root / pack_key(pack)
    path.write_bytes(path.read_bytes()[:cut])
    assert readable(fresh(repo), digests[:25], raws[:25]) == 25
    assert readable(fresh(repo), digests[25:], raws[25:]) == 0
    report = collect_garbage(fresh(repo), object(), grace_s=0)
    assert report.rebuilt_indexes == [pack] and report.damaged_rebuilt == [pack]
    assert repo.store.exists(pack_key(pack))  # still holds 25 live messages
    assert decode_index(repo.store.get(index_key(pack))) == entries[:25]
    after = fresh(repo)
    assert after.missing_chunks(digests) == set(digests[25:])  # a backup stores them again
    assert readable(after, digests[:25], raws[:25]) == 25


def test_a_damaged_frame_header_costs_only_its_chunk(packed):
    repo, pack, raws, digests = packed
    entries = decode_index(repo.store.get(index_key(pack)))
    path = repo.store.root / pack_key(pack)
    data = bytearray(path.read_bytes())
    data[entries[10].offset - FRAME_SIZE + 37] ^= 0x01  # its length field
    path.write_bytes(bytes(data))
    found, damaged = scan_pack(bytes(data))
    assert damaged and [e.digest for e in found] == digests[:10] + digests[11:]
    repo.store.delete(index_key(pack))
    collect_garbage(fresh(repo), object(), grace_s=0)
    after = fresh(repo)
    assert after.missing_chunks(digests) == {digests[10]}
    assert readable(after, digests, raws) == 39


def test_a_pack_nothing_can_account_for_is_kept_and_reported(packed):
    """An unframed pack (or garbage) without a whole index: kept, never swept."""
    repo, _pack, _raws, _digests = packed
    stray = "ab" * 16
    repo.store.put(pack_key(stray), os.urandom(100))
    os.utime(repo.store.root / pack_key(stray), (1_000_000, 1_000_000))
    report = collect_garbage(fresh(repo), object(), grace_s=0)
    assert report.damaged_packs == [stray] and repo.store.exists(pack_key(stray))
    # With a whole index (longer than the pack) that names only chunks stored elsewhere
    # (a crash before the data reached the disk), it may go.
    other = fresh(repo)
    entries = decode_index(repo.store.get(index_key(_pack)))
    repo.store.put(index_key(stray), encode_index(entries[:3]))
    os.utime(repo.store.root / index_key(stray), (1_000_000, 1_000_000))
    report = collect_garbage(other, object(), grace_s=0)
    assert not repo.store.exists(pack_key(stray)) and report.damaged_packs == []


def test_packs_of_the_first_unframed_format_still_read_and_are_rewritten_framed(tmp_path, needed):
    """No unframed pack is among the tests' fixtures; one made the old way still reads
    through its index, and garbage collection's repack writes its needed chunks framed."""
    from app.repository.packs import PackEntry, index_key

    repo = open_repository_at(tmp_path / "r", create=True, id=4)
    raws = messages(4, seed=5)
    digests = [repo.digest(r) for r in raws]
    sealed = [repo.chunks.codec.seal(r, d) for r, d in zip(raws, digests, strict=True)]
    entries, offset = [], 0
    for d, data in zip(digests, sealed, strict=True):
        entries.append(PackEntry(d, offset, len(data)))
        offset += len(data)
    old = "0f" * 16
    repo.store.put(pack_key(old), b"".join(sealed))
    repo.store.put(index_key(old), encode_index(entries))
    for path in (pack_key(old), index_key(old)):
        os.utime(repo.store.root / path, (1_000_000, 1_000_000))
    assert readable(fresh_plain(repo), digests, raws) == 4
    needed.update(digests[:2])
    report = collect_garbage(fresh_plain(repo), object(), grace_s=0)
    assert report.repacked_packs == 1 and not repo.store.exists(pack_key(old))
    (new,) = [k.rsplit("/", 1)[-1] for k in repo.store.list("packs/")]
    found, damaged = scan_pack(repo.store.get(pack_key(new)))
    assert sorted(e.digest for e in found) == sorted(digests[:2]) and not damaged
    assert readable(fresh_plain(repo), digests[:2], raws[:2]) == 2


def fresh_plain(repo):
    return open_repository_at(repo.store.root, id=repo.id)
