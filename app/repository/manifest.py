"""The manifest: what one disk image is, and how it is written down in the repository.

Design note. An image is a list of fixed-size blocks, each named by its chunk's digest
(``None`` for an all-zero block, which is never stored). The manifest holds that list with
the image's size, block size, source, read mode ("full" or "changed-blocks") and the image
hash: blake3 over the block digests, so a changed-blocks backup can state the whole image's
hash without reading the blocks it did not read, and an altered block list is detected on
load. A manifest is stored sealed (as a chunk is, see codec.py) under ``manifests/<id>``;
the id sorts by creation time. This module is the format only: writing images is
image_writer.py, reading them image_reader.py.
"""

from __future__ import annotations

import functools
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import blake3

from app.repository.codec import Codec, SealBroken
from app.repository.errors import RepositoryError

BLOCK_SIZE = 4 * 1024 * 1024
FORMAT = 1


@dataclass
class Manifest:
    id: str | None
    size: int
    block_size: int
    blocks: list[str | None]  # None: an all-zero block, not stored
    image_hash: str
    source: dict[str, Any]
    created_at: datetime
    read_mode: str  # "full" | "changed-blocks"
    previous_id: str | None = None
    stats: dict[str, int] = field(default_factory=dict)
    # The in-progress writer record this manifest's chunks are protected by until saved.
    writer_id: str | None = field(default=None, repr=False, compare=False)

    def block_length(self, index: int) -> int:
        return min(self.block_size, self.size - index * self.block_size)

    def digests(self) -> set[str]:
        return {d for d in self.blocks if d is not None}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "id": self.id,
            "size": self.size,
            "block_size": self.block_size,
            "blocks": self.blocks,
            "image_hash": self.image_hash,
            "source": self.source,
            "created_at": self.created_at.isoformat(),
            "read_mode": self.read_mode,
            "previous_id": self.previous_id,
            "stats": self.stats,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Manifest:
        return cls(
            id=doc["id"],
            size=doc["size"],
            block_size=doc["block_size"],
            blocks=doc["blocks"],
            image_hash=doc["image_hash"],
            source=doc.get("source") or {},
            created_at=datetime.fromisoformat(doc["created_at"]),
            read_mode=doc["read_mode"],
            previous_id=doc.get("previous_id"),
            stats=doc.get("stats") or {},
        )


def image_hash(size: int, block_size: int, blocks: list[str | None]) -> str:
    """The whole image's hash: blake3 over the list of block digests (a hash list).

    Each digest covers its block's bytes, so this covers the whole image, and it can be
    stated for a changed-blocks backup without reading the unchanged blocks.
    """
    h = blake3.blake3(f"bulwark-image-v1\n{size}\n{block_size}\n".encode())
    for digest in blocks:
        h.update((digest or "-").encode() + b"\n")
    return h.hexdigest()


def new_manifest_id(at: datetime) -> str:
    return f"{at:%Y%m%dt%H%M%S}z-{secrets.token_hex(6)}"


def manifest_key(manifest_id: str) -> str:
    return f"manifests/{manifest_id}"


@functools.cache
def zero_block(block_size: int) -> bytes:
    """An all-zero block (one shared copy per block size: compared and served often)."""
    return bytes(block_size)


def encode_manifest(manifest: Manifest, codec: Codec) -> bytes:
    doc = json.dumps(manifest.to_json(), separators=(",", ":")).encode()
    return codec.seal(doc, manifest.id)


def decode_manifest(stored: bytes, manifest_id: str, codec: Codec) -> Manifest:
    """The manifest stored under ``manifest_id``, checked against its image hash."""
    try:
        manifest = Manifest.from_json(json.loads(codec.open(stored, manifest_id)))
    except (SealBroken, ValueError, KeyError) as exc:
        raise RepositoryError(f"image {manifest_id} is unreadable: {exc}") from None
    if manifest.image_hash != image_hash(manifest.size, manifest.block_size, manifest.blocks):
        raise RepositoryError(f"image {manifest_id} is damaged: its block list was altered")
    return manifest
