"""The chunk store: blobs stored once each, under the digest of their content.

Design note (after pbs-datastore's ``chunk_store.rs``). A chunk's name is the blake3 digest
of its plain bytes, keyed with the repository key when the repository is encrypted (so names
tell nothing of the content). Its stored bytes are compressed and maybe encrypted, sealed
with that name (codec.py), so a chunk moved or renamed is refused on read. A chunk is kept
as its own object, ``chunks/<4 hex>/<digest>``, or, when small and asked for (mail), in a
pack with many others (packs.py). Every read is checked against the digest.

Storing a chunk that is already there only touches it: that touch is how a concurrent
garbage collection learns the chunk is in use again (gc.py). This module knows nothing of
images, manifests or the database.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable
from typing import Any

import blake3

from app.repository.backend import ObjectMissing, ObjectStore
from app.repository.codec import Codec, RepositoryKeys, SealBroken
from app.repository.errors import ChunkDamaged
from app.repository.packs import PACK_LIMIT, PackIndex, PackWriter, pack_key

WORKERS = max(2, os.cpu_count() or 2)
# Threads also wait on fsync and file reads, which need no CPU: twice the cores keeps the
# cores busy. Writing and reading images keep at most twice that many blocks in flight.
WRITE_THREADS = 2 * WORKERS
# The most a seal adds to a block: the flags byte, a nonce and a tag (compression only shrinks).
SEAL_OVERHEAD = 1 + 12 + 16


def threads_for(store: ObjectStore, least: int = WRITE_THREADS) -> int:
    """A store reached over the network (S3) waits on round trips, not cores: as many
    threads as it takes requests at once."""
    return max(least, getattr(store, "max_parallel", 0))


def chunk_key(digest: str) -> str:
    return f"chunks/{digest[:4]}/{digest}"


class ChunkStore:
    def __init__(self, store: ObjectStore, repository_key: bytes | None):
        self.store = store
        keys = RepositoryKeys(repository_key) if repository_key is not None else None
        self.codec = Codec(keys)
        self._digest_key = keys.digest_key if keys else None
        self.packs = PackIndex(store)
        self._open_pack = PackWriter(store, self.packs)
        self._local = threading.local()  # each reading thread's buffer for stored bytes

    def digest(self, data: bytes) -> str:
        if self._digest_key is not None:
            return blake3.blake3(data, key=self._digest_key).hexdigest()
        return blake3.blake3(data).hexdigest()

    def put_chunk(self, data: bytes, *, durable: bool = True, packed: bool = False) -> str:
        """Store ``data`` once; with ``durable=False`` it is whole or absent after a crash
        but only durable after :meth:`flush` (call it before the database names the digest).

        ``packed``: a small chunk goes into the open pack (many to a file, see packs.py);
        it is readable and durable only after :meth:`flush`.
        """
        if packed and len(data) <= PACK_LIMIT:
            return self._put_packed(data)
        digest, _new, _stored = self.put(data, durable=durable)
        return digest

    def _put_packed(self, data: bytes) -> str:
        digest = self.digest(data)
        if self._open_pack.holds(digest):
            return digest
        where = self.packs.locate(digest)
        # Using a stored chunk again tells a concurrent garbage collection (see put).
        if where is not None and self.packs.touch(where[0]):
            return digest
        # Not looked for among loose chunks (a file system call per message): a message
        # stored loose before packs existed is stored once more, in a pack, and found there.
        self._open_pack.append(digest, self.codec.seal_parts(data, digest), durable=False)
        return digest

    def flush(self) -> None:
        """Make every chunk stored with ``durable=False`` (or ``packed``) durable."""
        self._open_pack.write(durable=False)
        self.store.flush()

    def put(self, data: bytes, *, durable: bool) -> tuple[str, bool, int]:
        """Store a loose chunk: its digest, whether it was new, and the bytes it took."""
        digest = self.digest(data)
        key = chunk_key(digest)
        # Touching a present chunk tells a concurrent garbage collection it is in use again.
        if self.store.touch(key):
            return digest, False, 0
        parts = self.codec.seal_parts(data, digest)
        self.store.put(key, parts, durable=durable)
        return digest, True, sum(len(p) for p in parts)

    def check(self, digest: str, data=None, *, length: int | None = None) -> str | None:
        """What is wrong with the stored chunk, or None: the cheap check a backup makes
        before it references a chunk it did not store (see image_writer.py).

        Size and seal: the stored object must be of a size a block of ``length`` can seal
        to, and open (AES-GCM's tag checks every byte of an encrypted chunk; zstd's frame a
        compressed one). What is in hand is compared, not hashed: ``data`` (the block the
        backup read) byte for byte; without it a plain chunk, which has no seal, is hashed.
        """
        stored = self._stored_bytes(digest)
        if stored is None:
            return "missing from the repository"
        if length is not None and not 1 <= len(stored) <= length + SEAL_OVERHEAD:
            return f"{len(stored)} bytes stored for a block of {length}"
        try:
            opened = self.codec.open(stored, digest)
        except SealBroken as exc:
            return str(exc)
        if length is not None and len(opened) != length:
            return f"{len(opened)} bytes where {length} belong"
        if data is not None:
            return None if opened == data else "its content does not match the block read"
        if self.codec.keys is None and self.digest(opened) != digest:
            return "its content does not match its hash"
        return None

    def quarantine(self, digest: str) -> None:
        """Move a damaged chunk aside (``quarantine/``, kept for a post-mortem): nothing can
        reuse it, and the next backup holding its data stores it again."""
        key = chunk_key(digest)
        with contextlib.suppress(ObjectMissing):
            self.store.put(f"quarantine/{digest}", [self.store.get(key)])
            self.store.delete(key)

    def get_chunk(self, digest: str) -> bytes:
        data = self.load(digest)
        return data if isinstance(data, bytes) else bytes(data)

    def load(self, digest: str) -> bytes | bytearray:
        """The chunk's plain data, checked against its digest (maybe a bytearray: restores
        stream it on without another copy)."""
        stored = self._stored_bytes(digest)
        if stored is None:
            raise ChunkDamaged(digest, "missing from the repository")
        try:
            data = self.codec.open(stored, digest)
        except SealBroken as exc:
            raise ChunkDamaged(digest, str(exc)) from None
        if self.digest(data) != digest:
            raise ChunkDamaged(digest, "its content does not match its hash")
        return data

    def load_into(self, digest: str, out: bytearray) -> memoryview:
        """:meth:`load` into ``out`` (a block plus ``OPEN_SLACK``), allocating nothing per
        block where the store reads into a buffer: the plain data as a view of ``out``."""
        stored: Any = None
        get_into = getattr(self.store, "get_into", None)
        if get_into is not None and self.packs.locate(digest) is None:
            inbuf = getattr(self._local, "inbuf", None)
            if inbuf is None or len(inbuf) < len(out) + 4096:
                inbuf = self._local.inbuf = bytearray(len(out) + 4096)
            with contextlib.suppress(ObjectMissing):  # missing: the plain path looks again
                got = get_into(chunk_key(digest), inbuf)
                if got >= 0:
                    stored = memoryview(inbuf)[:got]
        if stored is None:
            stored = self._stored_bytes(digest)
        if stored is None:
            raise ChunkDamaged(digest, "missing from the repository")
        try:
            data = self.codec.open_into(stored, digest, out)
        except SealBroken as exc:
            raise ChunkDamaged(digest, str(exc)) from None
        if self.digest(data) != digest:
            raise ChunkDamaged(digest, "its content does not match its hash")
        return data

    def _stored_bytes(self, digest: str) -> bytes | None:
        """A chunk as stored: its place in a pack, or its own file; the index is read again
        once when neither has it (another process, or a repack, may have moved it)."""
        data = self._packed_bytes(self.packs.locate(digest))
        if data is not None:
            return data
        try:
            return self.store.get(chunk_key(digest))
        except ObjectMissing:
            return self._packed_bytes(self.packs.locate(digest, refresh=True))

    def _packed_bytes(self, where: tuple[str, int, int] | None) -> bytes | None:
        if where is None:
            return None
        pack_id, offset, length = where
        try:
            # If short, opening the seal reports the damage.
            return self.store.get_range(pack_key(pack_id), offset, length)
        except ObjectMissing:
            self.packs.forget(pack_id)
            return None

    def has_chunk(self, digest: str) -> bool:
        self.packs.refresh()  # packs other handles wrote since
        return not self.missing_chunks([digest])

    def missing_chunks(self, digests: Iterable[str]) -> set[str]:
        """Those of ``digests`` not stored (any more): their pack or their file is gone."""
        packs: dict[str, bool] = {}
        gone = set()
        for digest in digests:
            where = self.packs.locate(digest)
            if where is not None:
                if where[0] not in packs:
                    packs[where[0]] = self.store.exists(pack_key(where[0]))
                    if not packs[where[0]]:
                        self.packs.forget(where[0])  # storing it again must not find it there
                if packs[where[0]]:
                    continue
            if not self.store.exists(chunk_key(digest)):
                gone.add(digest)
        return gone

    def stored_totals(self) -> tuple[int, int]:
        """Chunks held (loose and packed) and the bytes they take."""
        chunks = stored = 0
        for info in self.store.stat_all("chunks/"):
            chunks += 1
            stored += info.size
        self.packs.refresh()
        chunks += len(self.packs)
        for info in self.store.stat_all("packs/"):
            stored += info.size
        for info in self.store.stat_all("index/"):
            stored += info.size
        return chunks, stored
