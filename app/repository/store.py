"""The repository: a content-addressed store of disk images and other chunks.

A disk image is a manifest of fixed-size blocks; each block is hashed (blake3, keyed with a
repository key when encrypted), compressed (zstd), optionally encrypted, and stored once
under its digest. All-zero blocks are not stored. Layout of the objects::

    config                      what the repository is (format, block size, wrapped key)
    chunks/<4 hex>/<digest>     one block (or a large object) as its own file
    packs/<2 hex>/<pack id>     many small chunks (mail messages) in one file (packs.py)
    index/<pack id>             which chunks a pack holds and where
    manifests/<id>              an image: size, block list, source, image hash, read mode
    writers/<id>                a backup in progress (garbage collection spares its chunks)
"""

from __future__ import annotations

import base64
import collections
import contextlib
import functools
import json
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import blake3

from app.repository.backend import FilesystemStore, ObjectMissing, ObjectStore
from app.repository.codec import Codec, RepositoryKeys, SealBroken, unwrap_key, wrap_key
from app.repository.packs import PACK_LIMIT, PackIndex, PackWriter, pack_key

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

BLOCK_SIZE = 4 * 1024 * 1024
FORMAT = 1
_ZERO = bytes(BLOCK_SIZE)
WORKERS = max(2, os.cpu_count() or 2)
# Threads also wait on fsync and file reads, which need no CPU: twice the cores keeps the
# cores busy. Writing and reading keep at most twice that many blocks in flight.
WRITE_THREADS = 2 * WORKERS
CLOCK_SLACK_S = 2.0


class RepositoryError(Exception):
    """The repository cannot be used as asked (missing, not initialised, locked)."""


class ChunkDamaged(Exception):  # noqa: N818 - reads as what happened
    """A chunk is missing, or its bytes do not hash to its name."""

    def __init__(
        self, digest: str, reason: str, *, index: int | None = None, manifest_id: str | None = None
    ):
        self.digest = digest
        self.reason = reason
        self.index = index
        self.manifest_id = manifest_id
        where = f"block {index} ({digest})" if index is not None else f"chunk {digest}"
        if manifest_id:
            where += f" of image {manifest_id}"
        super().__init__(f"{where} is damaged: {reason}")


class RepositoryLocked(RepositoryError):  # noqa: N818 - reads as what happened
    """Asked to delete what an immutable repository locks; ``until`` says when it can go."""

    def __init__(self, what: str, until: datetime):
        self.until = until
        super().__init__(f"{what} is immutable until {until:%Y-%m-%d %H:%M} UTC")


class ManifestInUse(RepositoryError):
    """A running backup builds on this manifest; it cannot be deleted now."""


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


def chunk_key(digest: str) -> str:
    return f"chunks/{digest[:4]}/{digest}"


def new_manifest_id(at: datetime) -> str:
    return f"{at:%Y%m%dt%H%M%S}z-{secrets.token_hex(6)}"


class Repository:
    def __init__(
        self,
        store: ObjectStore,
        config: dict[str, Any],
        repository_key: bytes | None,
        *,
        id: int | None = None,
    ):
        self.store = store
        self.config = config
        self.id = id
        self.uuid: str = config["uuid"]
        self.block_size: int = config["block_size"]
        self.encrypted: bool = config["encrypted"]
        keys = RepositoryKeys(repository_key) if repository_key is not None else None
        self._codec = Codec(keys)
        self._digest_key = keys.digest_key if keys else None
        self._zero = _ZERO if self.block_size == BLOCK_SIZE else bytes(self.block_size)
        self.packs = PackIndex(store)
        self._open_pack = PackWriter(store, self.packs)
        # A store reached over the network (S3) waits on round trips, not cores: as many
        # threads as it takes requests at once.
        self.threads = max(WRITE_THREADS, getattr(store, "max_parallel", 0))

    def __repr__(self) -> str:
        return f"Repository({self.store!r}, encrypted={self.encrypted})"

    # -- chunks ---------------------------------------------------------------------------

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
        digest, _new, _stored = self._put(data, durable=durable)
        return digest

    def _put_packed(self, data: bytes) -> str:
        digest = self.digest(data)
        if self._open_pack.holds(digest):
            return digest
        where = self.packs.locate(digest)
        # Using a stored chunk again tells a concurrent garbage collection (see _put).
        if where is not None and self.packs.touch(where[0]):
            return digest
        # Not looked for among loose chunks (a file system call per message): a message
        # stored loose before packs existed is stored once more, in a pack, and found there.
        self._open_pack.append(digest, self._codec.seal_parts(data, digest), durable=False)
        return digest

    def flush(self) -> None:
        """Make every chunk stored with ``durable=False`` (or ``packed``) durable."""
        self._open_pack.write(durable=False)
        self.store.flush()

    def _put(self, data: bytes, *, durable: bool) -> tuple[str, bool, int]:
        digest = self.digest(data)
        key = chunk_key(digest)
        # Touching a present chunk tells a concurrent garbage collection it is in use again.
        if self.store.touch(key):
            return digest, False, 0
        parts = self._codec.seal_parts(data, digest)
        self.store.put(key, parts, durable=durable)
        return digest, True, sum(len(p) for p in parts)

    def get_chunk(self, digest: str) -> bytes:
        data = self._load_chunk(digest)
        return data if isinstance(data, bytes) else bytes(data)

    def _load_chunk(self, digest: str) -> bytes | bytearray:
        """The chunk's plain data, checked against its digest (maybe a bytearray: restores
        stream it on without another copy)."""
        stored = self._stored_bytes(digest)
        if stored is None:
            raise ChunkDamaged(digest, "missing from the repository")
        try:
            data = self._codec.open(stored, digest)
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

    # -- images ---------------------------------------------------------------------------

    def write_image(
        self,
        source: BinaryIO | Iterable[bytes],
        *,
        size: int,
        source_info: dict[str, Any],
        previous: Manifest | None = None,
        changed: list[tuple[int, int]] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Manifest:
        """Store an image of ``size`` bytes; the result is durable only once saved.

        With ``previous`` and ``changed`` (byte areas that changed since ``previous``) only
        blocks touching a changed area are read, from a seekable ``source``; the others
        reuse ``previous``'s digests. ``progress`` gets the bytes done so far.
        """
        if size < 0:
            raise ValueError("size must not be negative")
        bs = self.block_size
        count = -(-size // bs)
        to_read: list[int] | None = None
        if changed is not None:
            if previous is None:
                raise ValueError("changed areas need the previous manifest")
            if not hasattr(source, "seek"):
                raise TypeError("reading changed areas needs a seekable source")
            to_read = self._blocks_to_read(previous, size, changed)
        created = datetime.now(UTC)
        buffers = _Buffers(bs)
        writer_id = self._begin_writer(previous.id if previous else None)
        try:
            if to_read is None:
                blocks = [None] * count
                reader = _sequential_blocks(source, size, bs, buffers)
                read_mode = "full"
            else:
                blocks = list(previous.blocks[:count])
                blocks += [None] * (count - len(blocks))
                # The reused blocks are in use again: tell a concurrent garbage collection.
                reading = set(to_read)
                missing = [
                    d
                    for i, d in enumerate(blocks)
                    if d is not None and i not in reading and not self.store.touch(chunk_key(d))
                ]
                if missing:
                    raise ChunkDamaged(
                        missing[0], "a block of the previous image is gone", manifest_id=previous.id
                    )
                reader = _random_blocks(source, size, bs, to_read, buffers)
                read_mode = "changed-blocks"
            stats = self._store_blocks(reader, blocks, progress, buffers)
        except BaseException:
            self._end_writer(writer_id)
            raise
        stats["blocks"] = count
        # Blocks taken from the previous image without reading them (changed-blocks mode).
        stats["unchanged_blocks"] = 0 if to_read is None else count - len(to_read)
        return Manifest(
            id=None,
            size=size,
            block_size=bs,
            blocks=blocks,
            image_hash=image_hash(size, bs, blocks),
            source=dict(source_info),
            created_at=created,
            read_mode=read_mode,
            previous_id=previous.id if previous else None,
            stats=stats,
            writer_id=writer_id,
        )

    def _blocks_to_read(
        self, previous: Manifest, size: int, changed: list[tuple[int, int]]
    ) -> list[int]:
        bs = self.block_size
        count = -(-size // bs)
        if previous.block_size != bs:
            return list(range(count))
        wanted: set[int] = set()
        for offset, length in changed:
            if offset < 0 or length < 0:
                raise ValueError(f"bad changed area ({offset}, {length})")
            if length == 0 or offset >= size:
                continue
            end = min(size, offset + length)
            wanted.update(range(offset // bs, (end - 1) // bs + 1))
        # Blocks the previous image did not cover whole (it was smaller) are read too.
        covered = previous.size // bs
        wanted.update(range(min(covered, count), count))
        if size % bs:
            wanted.add(count - 1)  # a short last block is never the previous image's block
        return sorted(wanted)

    def _store_blocks(
        self,
        reader: Iterator[Block],
        blocks: list[str | None],
        progress: Callable[[int], None] | None,
        buffers: _Buffers,
    ) -> dict[str, int]:
        """Hash, compress and store blocks on a thread pool, a bounded number in flight."""
        stats = collections.Counter(
            read_bytes=0, new_chunks=0, stored_bytes=0, reused_chunks=0, zero_blocks=0
        )
        inflight: collections.deque[tuple[int, int, Future, bytearray | None]] = collections.deque()
        done = 0

        def finish_one() -> None:
            nonlocal done
            index, length, fut, buf = inflight.popleft()
            digest, new, stored = fut.result()
            buffers.give(buf)  # the block is stored: its buffer can take the next one
            blocks[index] = digest
            if digest is None:
                stats["zero_blocks"] += 1
            elif new:
                stats["new_chunks"] += 1
                stats["stored_bytes"] += stored
            else:
                stats["reused_chunks"] += 1
            done += length
            if progress is not None:
                progress(done)

        with ThreadPoolExecutor(self.threads, thread_name_prefix="repo-write") as pool:
            try:
                for index, data, buf in reader:
                    stats["read_bytes"] += len(data)
                    future = pool.submit(self._store_block, data)
                    inflight.append((index, len(data), future, buf))
                    if len(inflight) >= 2 * self.threads:
                        finish_one()
                while inflight:
                    finish_one()
            finally:
                for _i, _l, fut, _b in inflight:
                    fut.cancel()
        return dict(stats)

    def _store_block(self, data) -> tuple[str | None, bool, int]:
        if data == self._zero[: len(data)]:
            return None, False, 0
        return self._put(data, durable=False)

    def save_manifest(self, manifest: Manifest) -> str:
        """Make the image durable (its chunks first, then the manifest); returns its id."""
        missing = [d for d in manifest.digests() if not self.store.exists(chunk_key(d))]
        if missing:
            raise ChunkDamaged(missing[0], "missing when the image was saved")
        self.store.flush()
        if manifest.id is None:
            manifest.id = new_manifest_id(manifest.created_at)
        manifest.image_hash = image_hash(manifest.size, manifest.block_size, manifest.blocks)
        doc = json.dumps(manifest.to_json(), separators=(",", ":")).encode()
        # A garbage collection sweeping right now must finish before the manifest appears,
        # so a chunk it removed cannot be named by a manifest it did not see.
        with self.gc_lock(exclusive=False):
            missing = [d for d in manifest.digests() if not self.store.exists(chunk_key(d))]
            if missing:
                raise ChunkDamaged(missing[0], "removed while the image was being written")
            self.store.put(f"manifests/{manifest.id}", self._codec.seal(doc, manifest.id))
        if manifest.writer_id:
            self._end_writer(manifest.writer_id)
            manifest.writer_id = None
        return manifest.id

    def abandon(self, manifest: Manifest) -> None:
        """Give up an unsaved image: its chunks become garbage for the next collection."""
        if manifest.writer_id:
            self._end_writer(manifest.writer_id)
            manifest.writer_id = None

    def load_manifest(self, manifest_id: str) -> Manifest:
        try:
            stored = self.store.get(f"manifests/{manifest_id}")
        except (ObjectMissing, ValueError):
            raise RepositoryError(f"no image {manifest_id!r} in the repository") from None
        try:
            manifest = Manifest.from_json(json.loads(self._codec.open(stored, manifest_id)))
        except (SealBroken, ValueError, KeyError) as exc:
            raise RepositoryError(f"image {manifest_id} is unreadable: {exc}") from None
        if manifest.image_hash != image_hash(manifest.size, manifest.block_size, manifest.blocks):
            raise RepositoryError(f"image {manifest_id} is damaged: its block list was altered")
        return manifest

    def list_manifests(self) -> list[str]:
        return sorted(k.removeprefix("manifests/") for k in self.store.list("manifests/"))

    def delete_manifest(self, manifest_id: str) -> None:
        """Remove an image; its chunks go at the next garbage collection."""
        if manifest_id in self.pinned_manifests():
            raise ManifestInUse(f"a running backup or a download reads image {manifest_id}")
        until = self.locked_until(manifest_id)
        if until is not None:
            raise RepositoryLocked(f"image {manifest_id}", until)
        with contextlib.suppress(ObjectMissing):
            self.store.delete(f"manifests/{manifest_id}")

    @property
    def immutable_days(self) -> int | None:
        """The lock period of an immutable repository (see immutable.py), else None."""
        return (self.config.get("immutability") or {}).get("days")

    def locked_until(self, manifest_id: str) -> datetime | None:
        """When an image's lock ends, if the repository is immutable and it is locked now."""
        from app.repository.immutable import locked_until

        return locked_until(self.store, f"manifests/{manifest_id}")

    def read_image(
        self, manifest: Manifest, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        """The image's bytes from ``offset``; every block is checked against its digest."""
        size = manifest.size
        if offset < 0 or offset > size:
            raise ValueError(f"offset {offset} is outside the image (size {size})")
        end = size if length is None else min(size, offset + max(0, length))
        if end <= offset:
            return
        bs = manifest.block_size
        first, last = offset // bs, (end - 1) // bs

        def fetch(index: int) -> bytes:
            digest = manifest.blocks[index]
            want = manifest.block_length(index)
            if digest is None:
                return self._zero if want == len(self._zero) else bytes(want)
            try:
                data = self._load_chunk(digest)
            except ChunkDamaged as exc:
                raise ChunkDamaged(
                    digest, exc.reason, index=index, manifest_id=manifest.id
                ) from None
            if len(data) != want:
                raise ChunkDamaged(
                    digest,
                    f"{len(data)} bytes where {want} belong",
                    index=index,
                    manifest_id=manifest.id,
                )
            return data

        with ThreadPoolExecutor(self.threads, thread_name_prefix="repo-read") as pool:
            pending: collections.deque[Future] = collections.deque()
            indexes = iter(range(first, last + 1))
            try:
                for index in indexes:
                    pending.append(pool.submit(fetch, index))
                    if len(pending) >= 2 * self.threads:
                        break
                current = first
                while pending:
                    data = pending.popleft().result()
                    nxt = next(indexes, None)
                    if nxt is not None:
                        pending.append(pool.submit(fetch, nxt))
                    start = current * bs
                    lo = max(offset, start) - start
                    hi = min(end, start + len(data)) - start
                    yield data if (lo == 0 and hi == len(data)) else data[lo:hi]
                    current += 1
            finally:
                for fut in pending:
                    fut.cancel()

    def verify_image(
        self,
        manifest: Manifest,
        *,
        sample: float = 1.0,
        progress: Callable[[int], None] | None = None,
    ) -> list[ChunkDamaged]:
        """Re-read and re-hash the image's blocks (all, or a random share); list damage."""
        indexes = [i for i, d in enumerate(manifest.blocks) if d is not None]
        if sample < 1.0 and indexes:
            share = max(1, round(len(indexes) * sample))
            indexes = sorted(secrets.SystemRandom().sample(indexes, share))
        damaged: list[ChunkDamaged] = []
        checked: dict[str, ChunkDamaged | None] = {}
        done = 0

        def check(index: int) -> tuple[int, ChunkDamaged | None]:
            digest = manifest.blocks[index]
            try:
                data = self._load_chunk(digest)
                if len(data) != manifest.block_length(index):
                    return index, ChunkDamaged(
                        digest, "wrong length", index=index, manifest_id=manifest.id
                    )
            except ChunkDamaged as exc:
                return index, ChunkDamaged(digest, exc.reason, index=index, manifest_id=manifest.id)
            return index, None

        with ThreadPoolExecutor(
            max(WORKERS, getattr(self.store, "max_parallel", 0)), thread_name_prefix="repo-verify"
        ) as pool:
            unique = []
            for i in indexes:
                if manifest.blocks[i] not in checked:
                    checked[manifest.blocks[i]] = None
                    unique.append(i)
            for index, problem in pool.map(check, unique):
                done += manifest.block_length(index)
                if progress is not None:
                    progress(done)
                if problem is not None:
                    checked[manifest.blocks[index]] = problem
        for i in indexes:
            problem = checked.get(manifest.blocks[i])
            if problem is not None:
                damaged.append(
                    ChunkDamaged(problem.digest, problem.reason, index=i, manifest_id=manifest.id)
                )
        return damaged

    # -- writers in progress (garbage collection safety) ----------------------------------

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """A backup of small objects (mail) in progress: garbage collection spares every
        chunk it stores or uses again until it ends, as it does for an image being written.
        What a failed backup stored stays in the open pack (another backup may share the
        handle and its pack): a later flush writes it, and garbage collection removes it."""
        writer_id = self._begin_writer(None)
        try:
            yield
        finally:
            self._end_writer(writer_id)

    def pin(self, manifest_id: str) -> Callable[[], None]:
        """Keep an image while something outside a job reads it (a download): deleting it
        raises ManifestInUse, so expiry keeps its restore point until the next run. Call
        the returned function when done; a dead process's pin is ignored."""
        writer_id = self._begin_writer(manifest_id, purpose="read")
        return functools.partial(self._end_writer, writer_id)

    def _begin_writer(self, previous: str | None, *, purpose: str = "write") -> str:
        # Chunks used again from now on must be touched anew: this writer's start is the
        # collection's cutoff, and an earlier touch may lie before it.
        self.packs.forget_touches()
        writer_id = f"{int(time.time())}-{secrets.token_hex(6)}"
        doc = {
            # Early by a margin: file times come from a coarse clock that can lag time.time().
            "started": time.time() - CLOCK_SLACK_S,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "previous": previous,
            "purpose": purpose,
        }
        # Not fsynced: after a crash the writer is dead and its record meaningless anyway.
        self.store.put(f"writers/{writer_id}", json.dumps(doc).encode(), durable=False)
        return writer_id

    def _end_writer(self, writer_id: str) -> None:
        with contextlib.suppress(ObjectMissing):
            self.store.delete(f"writers/{writer_id}")

    def active_writers(
        self, *, stale_after: float = 48 * 3600, remove_dead: bool = False
    ) -> list[dict[str, Any]]:
        """Backups writing right now; records of dead processes on this host are ignored
        (and removed with ``remove_dead``), as are records older than ``stale_after``."""
        host = socket.gethostname()
        result = []
        for key in self.store.list("writers/"):
            try:
                doc = json.loads(self.store.get(key))
            except (ObjectMissing, ValueError):
                continue
            dead = doc.get("host") == host and not _pid_alive(doc.get("pid", 0))
            if dead and remove_dead:
                with contextlib.suppress(ObjectMissing):
                    self.store.delete(key)
            if dead or time.time() - doc.get("started", 0) > stale_after:
                continue
            doc["id"] = key.removeprefix("writers/")
            result.append(doc)
        return result

    def pinned_manifests(self) -> dict[str, str]:
        """Images that must stay: manifest id -> "write" (a backup builds on it) or "read"."""
        return {
            w["previous"]: w.get("purpose", "write")
            for w in self.active_writers()
            if w.get("previous")
        }

    def gc_lock(self, *, exclusive: bool):
        lock = getattr(self.store, "lock", None)
        if lock is None:
            return contextlib.nullcontext()
        return lock("gc", exclusive=exclusive)


class _Buffers:
    """Reusable block buffers: reading into them spares an allocation per block."""

    def __init__(self, size: int):
        self.size = size
        self._free: list[bytearray] = []

    def take(self) -> bytearray:
        return self._free.pop() if self._free else bytearray(self.size)

    def give(self, buf: bytearray | None) -> None:
        if buf is not None:
            self._free.append(buf)


Block = tuple[int, Any, "bytearray | None"]  # index, data, the pooled buffer holding it


def _sequential_blocks(
    source: BinaryIO | Iterable[bytes], size: int, bs: int, buffers: _Buffers
) -> Iterator[Block]:
    index = 0
    remaining = size
    if hasattr(source, "read"):
        while remaining > 0:
            want = min(bs, remaining)
            data, buf = _read_block(source, want, buffers)
            if len(data) < want:
                raise ValueError(
                    f"the source ended at byte {size - remaining + len(data)} of {size}"
                )
            yield index, data, buf
            index += 1
            remaining -= want
        return
    pending = bytearray()
    for piece in source:
        pending += piece
        while len(pending) >= min(bs, remaining) and remaining > 0:
            want = min(bs, remaining)
            yield index, bytes(pending[:want]), None
            del pending[:want]
            index += 1
            remaining -= want
        if remaining == 0 and pending:
            raise ValueError(f"the source is longer than {size} bytes")
    if remaining > 0:
        raise ValueError(f"the source ended at byte {size - remaining} of {size}")


def _random_blocks(
    source: BinaryIO, size: int, bs: int, indexes: list[int], buffers: _Buffers
) -> Iterator[Block]:
    for index in indexes:
        want = min(bs, size - index * bs)
        source.seek(index * bs)
        data, buf = _read_block(source, want, buffers)
        if len(data) < want:
            raise ValueError(f"the source ended inside block {index}")
        yield index, data, buf


def _read_block(source: BinaryIO, want: int, buffers: _Buffers) -> tuple[Any, bytearray | None]:
    """Up to ``want`` bytes (fewer only at the end of the source)."""
    if not hasattr(source, "readinto"):
        return _read_exactly(source, want), None
    buf = buffers.take()
    view = memoryview(buf)[:want]
    got = 0
    while got < want:
        n = source.readinto(view[got:])
        if not n:
            break
        got += n
    # The whole buffer when full: comparing a bytearray (zero check) is a memcmp, comparing
    # a memoryview is not. A short last block is copied once.
    return (buf if got == len(buf) else bytes(view[:got])), buf


def _read_exactly(source: BinaryIO, want: int) -> bytes:
    data = source.read(want)
    if data is None:
        data = b""
    if len(data) == want or not data:
        return data
    parts = [data]
    got = len(data)
    while got < want:
        more = source.read(want - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- opening ----------------------------------------------------------------------------------


def open_repository_at(
    path: Path,
    *,
    key: bytes | None = None,
    create: bool = False,
    encrypted: bool | None = None,
    id: int | None = None,
    block_size: int = BLOCK_SIZE,
) -> Repository:
    """Open the repository in the directory ``path`` (see :func:`open_repository_in`)."""
    path = Path(path)
    return open_repository_in(
        FilesystemStore(path),
        label=str(path),
        key=key,
        create=create,
        encrypted=encrypted,
        id=id,
        block_size=block_size,
    )


def open_repository_in(
    store: ObjectStore,
    *,
    label: str,
    key: bytes | None = None,
    create: bool = False,
    encrypted: bool | None = None,
    id: int | None = None,
    block_size: int = BLOCK_SIZE,
    immutable_days: int | None = None,
) -> Repository:
    """Open the repository held by ``store``; ``key`` is the service secret
    (BULWARK_SECRET_KEY); ``label`` names it in errors (a directory, ``s3://bucket/prefix``).

    With ``create`` a missing repository is initialised (``encrypted`` defaults to whether a
    key is given). An encrypted repository's own key is kept in its config, wrapped by the
    service secret: without that secret the data cannot be read back.
    """
    try:
        config = json.loads(store.get("config"))
    except ObjectMissing:
        if not create:
            raise RepositoryError(f"{label} holds no Bulwark repository") from None
        if encrypted is None:
            encrypted = key is not None
        config = _initialise(store, label, key, encrypted, block_size, immutable_days)
    except (OSError, ValueError) as exc:
        raise RepositoryError(f"cannot read the repository config in {label}: {exc}") from None
    if config.get("format") != FORMAT:
        raise RepositoryError(f"{label}: unknown repository format {config.get('format')!r}")
    immutability = config.get("immutability")
    if immutability:
        # The config decides, whatever the connection says now: it cannot be switched off.
        from app.repository.immutable import LockingStore

        store = LockingStore(store, int(immutability["days"]))
    repository_key = None
    if config.get("encrypted"):
        if key is None:
            raise RepositoryError(f"{label} is encrypted and no key was given")
        try:
            repository_key = unwrap_key(
                key, base64.b64decode(config["wrapped_key"]), config["uuid"]
            )
        except SealBroken as exc:
            raise RepositoryError(str(exc)) from None
    return Repository(store, config, repository_key, id=id)


def _initialise(
    store: ObjectStore,
    label: str,
    key: bytes | None,
    encrypted: bool,
    block_size: int,
    immutable_days: int | None = None,
) -> dict[str, Any]:
    if encrypted and key is None:
        raise RepositoryError("an encrypted repository needs the service secret")
    if immutable_days and not (hasattr(store, "lock_enabled") and store.lock_enabled()):
        raise RepositoryError(
            f"{label}: an immutable repository needs an S3 bucket created with Object Lock "
            "enabled (it cannot be added to a bucket later)"
        )
    if isinstance(store, FilesystemStore):
        path = store.root
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RepositoryError(f"cannot create {path}: {exc.strerror}") from None
        if any(p.name != ".locks" for p in path.iterdir()):
            raise RepositoryError(f"{path} is not empty and holds no Bulwark repository")
    elif next(iter(store.list("")), None) is not None:
        raise RepositoryError(f"{label} is not empty and holds no Bulwark repository")
    config: dict[str, Any] = {
        "format": FORMAT,
        "uuid": str(uuid.uuid4()),
        "block_size": block_size,
        "hash": "blake3-keyed" if encrypted else "blake3",
        "compression": "zstd",
        "encrypted": encrypted,
        "created_at": datetime.now(UTC).isoformat(),
    }
    if immutable_days:
        config["immutability"] = {"mode": "s3-object-lock-compliance", "days": immutable_days}
    if encrypted:
        config["cipher"] = "aes-256-gcm"
        config["wrapped_key"] = base64.b64encode(
            wrap_key(key, secrets.token_bytes(32), config["uuid"])
        ).decode()
    try:
        store.put("config", json.dumps(config, indent=1).encode())
    except OSError as exc:
        raise RepositoryError(f"cannot write to {label}: {exc.strerror or exc}") from None
    return config


_open_lock = threading.Lock()


def open_repository(
    session: Session, connection_id: int, *, root_key: bytes | None = None, create: bool = False
) -> Repository:
    """Open the repository a ``repository`` connection points at."""
    from app.db.models import Connection
    from app.domain.connections import ConnectionKind

    conn = session.get(Connection, connection_id)
    if conn is None or conn.kind != ConnectionKind.REPOSITORY:
        raise RepositoryError(f"connection {connection_id} is not a repository")
    if root_key is None:
        from app.config import get_settings

        root_key = get_settings().root_key()
    from app.repository.connection import store_for

    store, label = store_for(conn, root_key)
    options = conn.options or {}
    with _open_lock:
        return open_repository_in(
            store,
            label=label,
            key=root_key,
            create=create,
            encrypted=bool(options.get("encrypted", False)),
            id=conn.id,
            immutable_days=options.get("immutable_days"),
        )
