"""A backup that reuses a damaged block must not succeed silently: a chunk found already
stored is checked (size and seal) the first time a backup references it, a damaged one is
moved aside and stored again; one a verify found bad is never reused."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from app.repository import BLOCK_SIZE, ChunkDamaged
from app.repository.chunks import chunk_key
from app.repository.image_writer import mark_verified
from tests.repository.conftest import make_image


def flip(repo, digest: str) -> None:
    """One flipped bit in the stored chunk, as a failing disk would leave it."""
    key = chunk_key(digest)
    raw = bytearray(repo.store.get(key))
    raw[len(raw) // 2] ^= 0x10
    repo.store.put(key, bytes(raw))


def backup(repo, image: bytes, **kw):
    manifest = repo.write_image(io.BytesIO(image), size=len(image), source_info={}, **kw)
    repo.save_manifest(manifest)
    return manifest


@pytest.mark.parametrize("kind", ["r", "t"], ids=["incompressible", "compressible"])
def test_a_damaged_block_found_stored_is_stored_again(repo, kind):
    image = make_image([kind, "z", "r"], BLOCK_SIZE, seed=3)
    first = backup(repo, image)
    victim = first.blocks[0]
    flip(repo, victim)
    with pytest.raises(ChunkDamaged):
        b"".join(repo.read_image(first))

    second = backup(repo, image)  # the same data again: the chunks are there
    assert second.stats["checked_chunks"] == 2 and second.stats["damaged_reused"] == 1
    assert second.stats["new_chunks"] == 1 and second.stats["reused_chunks"] == 1
    assert b"".join(repo.read_image(second)) == image  # restorable, not silently damaged
    assert b"".join(repo.read_image(first)) == image  # the same chunk: healed too
    assert repo.store.exists(f"quarantine/{victim}")


def test_a_block_carried_over_is_checked_after_a_verify_and_read_again_if_damaged(repo):
    image = bytearray(make_image(["r", "t", "r", "t"], BLOCK_SIZE, seed=4))
    first = backup(repo, bytes(image))
    image[10:20] = b"x" * 10  # block 0 changes; blocks 1-3 are carried over unread
    changed = [(10, 10)]
    second = backup(repo, bytes(image), previous=first, changed=changed)
    # The previous image's backup stored its blocks and no verify ran since: trusted.
    assert second.stats["checked_chunks"] == 0 and second.stats["checked"] is True

    flip(repo, second.blocks[2])  # rots at rest
    mark_verified(repo.store, datetime.now(UTC))  # a (sampled) verify ran, missing it
    third = backup(repo, bytes(image), previous=second, changed=[])
    assert third.stats["checked_chunks"] == 4 and third.stats["damaged_reused"] == 1
    assert third.stats["read_bytes"] == BLOCK_SIZE  # block 2 read from the source again
    assert b"".join(repo.read_image(third)) == bytes(image)
    # Checked by the third: the fourth trusts them again.
    fourth = backup(repo, bytes(image), previous=third, changed=[])
    assert fourth.stats["checked_chunks"] == 0 and fourth.stats["read_bytes"] == 0


def test_a_block_a_verify_quarantined_is_not_reused(repo):
    image = make_image(["r", "t", "r"], BLOCK_SIZE, seed=5)
    first = backup(repo, image)
    repo.chunks.quarantine(first.blocks[1])  # what a verify does with a damaged block
    second = backup(repo, image, previous=first, changed=[])
    assert second.stats["read_bytes"] == BLOCK_SIZE  # read again, not named unstored
    assert b"".join(repo.read_image(second)) == image
    third = backup(repo, image)
    assert third.stats["damaged_reused"] == 0
    assert b"".join(repo.read_image(third)) == image
