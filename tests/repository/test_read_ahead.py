"""Restores read blocks ahead into a fixed pool of buffers (``read_image(reuse_buffers=True)``):
the bytes are those of the image for every repository kind and every path of the codec, a
damaged block is refused naming it, before any of its bytes."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from app.repository.backend import FilesystemStore
from app.repository.chunks import chunk_key
from app.repository.errors import ChunkDamaged
from app.repository.store import open_repository_at
from tests.repository.test_image_download import BS, block

KINDS = ["zero", "random", "hex", "text"]


def image(rnd: random.Random, blocks: int) -> bytes:
    return b"".join(block(rnd.choice(KINDS), rnd) for _ in range(blocks)) + rnd.randbytes(1000)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_pooled_read_gives_the_image_byte_for_byte(tmp_path: Path, encrypted: bool):
    rnd = random.Random(5)
    data = image(rnd, 40)  # every kind of block, many times over the pool's size, a short tail
    repo = open_repository_at(
        tmp_path / "repo", key=b"k" * 32, create=True, encrypted=encrypted, block_size=BS
    )
    manifest = repo.write_image(io.BytesIO(data), size=len(data), source_info={})
    repo.save_manifest(manifest)
    out = bytearray()
    for piece in repo.read_image(manifest, reuse_buffers=True):
        out += piece  # written before the next piece is asked for, as a restore does
    assert bytes(out) == data
    # Ranges across block boundaries come out the same as from the copying reader.
    for start, length in [(BS - 7, 2 * BS + 9), (0, 1), (len(data) - 5, 5), (3 * BS, BS)]:
        pooled = b"".join(
            bytes(p) for p in repo.read_image(manifest, start, length, reuse_buffers=True)
        )
        assert pooled == data[start : start + length]


def test_pooled_read_refuses_a_damaged_block(tmp_path: Path):
    rnd = random.Random(6)
    data = b"".join(block("hex", rnd) for _ in range(12))
    repo = open_repository_at(tmp_path / "repo", key=b"k" * 32, create=True, block_size=BS)
    manifest = repo.write_image(io.BytesIO(data), size=len(data), source_info={})
    repo.save_manifest(manifest)
    stored = Path(FilesystemStore(tmp_path / "repo")._path(chunk_key(manifest.blocks[9])))
    raw = bytearray(stored.read_bytes())
    raw[len(raw) // 2] ^= 1
    stored.write_bytes(bytes(raw))
    got = 0
    with pytest.raises(ChunkDamaged) as caught:
        for piece in repo.read_image(manifest, reuse_buffers=True):
            got += len(piece)
    assert caught.value.index == 9 and got == 9 * BS  # nothing of block 9 came out
