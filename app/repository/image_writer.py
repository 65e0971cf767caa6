"""Writing a disk image: blocks in, chunks stored, a manifest out.

Design note (pbs-datastore's fixed-index writer). The source is cut into blocks of the
repository's block size; each block is hashed, sealed and stored on a thread pool, a bounded
number in flight, and all-zero blocks are not stored. With the previous image and the byte
areas changed since (changed-block tracking) only blocks touching a changed area are read;
the others keep the previous image's digests, and those chunks are touched so a concurrent
garbage collection sees them used again (it also spares the writer record this writer holds
from its first block to the saved manifest).

A block is never referenced unchecked. A backup that finds a chunk already stored (the same
data in another image, or a block carried over from the previous image) checks it once,
cheaply, before naming it (``ChunkStore.check``: size and seal, the data in hand compared);
a damaged or missing one is moved aside (quarantine, as a verify does) and stored again from
the source. What a manifest names was thus stored or checked by its backup (``stats
["checked"]``): the next backup of the image trusts the previous image's blocks without a
check, until a verify of the repository runs (``verify_marker``) — then the first backup
after it checks them again. A damaged block found by the verify itself is quarantined there.

Saving makes the chunks durable first, then, under the shared ``gc`` lock and after checking
that every chunk it names still exists, the manifest: a manifest never names a chunk a sweep
removed.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, BinaryIO

from app.repository.backend import ObjectMissing, ObjectStore
from app.repository.chunks import ChunkStore, chunk_key, threads_for
from app.repository.errors import ChunkDamaged
from app.repository.manifest import (
    Manifest,
    encode_manifest,
    image_hash,
    manifest_key,
    new_manifest_id,
    zero_block,
)
from app.repository.writers import WriterRecords, gc_lock

log = logging.getLogger(__name__)


class ImageWriter:
    def __init__(self, chunks: ChunkStore, writers: WriterRecords, block_size: int):
        self.chunks = chunks
        self.store = chunks.store
        self.writers = writers
        self.block_size = block_size
        self._zero = zero_block(block_size)
        self._fresh: dict[str, list[str]] = {}

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
        checks = ReuseChecks(self.chunks, self._trusted(previous))
        fresh: list[str] = []  # chunks this image stored new: garbage at once if it fails
        writer_id = self.writers.begin(previous.id if previous else None)
        try:
            if to_read is None:
                blocks = [None] * count
                reader = _sequential_blocks(source, size, bs, buffers)
                read_mode = "full"
            else:
                blocks = list(previous.blocks[:count])
                blocks += [None] * (count - len(blocks))
                reading = set(to_read)
                carried = [
                    (i, d) for i, d in enumerate(blocks) if d is not None and i not in reading
                ]
                # Carried blocks that are gone or damaged are read from the source again.
                again = checks.carried(carried, lambda i: min(bs, size - i * bs))
                for index in again:
                    blocks[index] = None
                to_read = sorted(reading | set(again))
                reader = _random_blocks(source, size, bs, to_read, buffers)
                read_mode = "changed-blocks"
            stats = self._store_blocks(reader, blocks, progress, buffers, checks, fresh)
        except BaseException:
            self.writers.abandoned(writer_id, fresh)
            raise
        stats.update(checks.stats)
        stats["checked"] = True  # every block named was stored or checked (see the note)
        stats["blocks"] = count
        self._fresh[writer_id] = fresh  # until saved or abandoned
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

    def _trusted(self, previous: Manifest | None) -> frozenset[str]:
        """The previous image's chunks, when its backup stored or checked each and no verify
        ran since; nothing otherwise (each reused chunk is then checked)."""
        if previous is None or not (previous.stats or {}).get("checked"):
            return frozenset()
        verified = verify_marker(self.store)
        if verified is not None and verified >= previous.created_at:
            return frozenset()
        return frozenset(previous.digests())

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
        checks: ReuseChecks,
        fresh: list[str],
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

        threads = threads_for(self.chunks.store)
        with ThreadPoolExecutor(threads, thread_name_prefix="repo-write") as pool:
            try:
                for index, data, buf in reader:
                    stats["read_bytes"] += len(data)
                    future = pool.submit(self._store_block, data, checks, fresh)
                    inflight.append((index, len(data), future, buf))
                    if len(inflight) >= 2 * threads:
                        finish_one()
                while inflight:
                    finish_one()
            finally:
                for _i, _l, fut, _b in inflight:
                    fut.cancel()
        return dict(stats)

    def _store_block(
        self, data, checks: ReuseChecks, fresh: list[str]
    ) -> tuple[str | None, bool, int]:
        if data == self._zero[: len(data)]:
            return None, False, 0
        digest, new, stored = self.chunks.put(data, durable=False)
        if not new and not checks.sound(digest, data):
            digest, new, stored = self.chunks.put(data, durable=False)  # quarantined: again
        if new:
            fresh.append(digest)  # here, not when collected: a failure may come first
        return digest, new, stored

    def save_manifest(self, manifest: Manifest) -> str:
        """Make the image durable (its chunks first, then the manifest); returns its id."""
        missing = [d for d in manifest.digests() if not self.store.exists(chunk_key(d))]
        if missing:
            raise ChunkDamaged(missing[0], "missing when the image was saved")
        self.store.flush()
        if manifest.id is None:
            manifest.id = new_manifest_id(manifest.created_at)
        manifest.image_hash = image_hash(manifest.size, manifest.block_size, manifest.blocks)
        sealed = encode_manifest(manifest, self.chunks.codec)
        # A garbage collection sweeping right now must finish before the manifest appears,
        # so a chunk it removed cannot be named by a manifest it did not see.
        with gc_lock(self.store, exclusive=False):
            missing = [d for d in manifest.digests() if not self.store.exists(chunk_key(d))]
            if missing:
                raise ChunkDamaged(missing[0], "removed while the image was being written")
            self.store.put(manifest_key(manifest.id), sealed)
        if manifest.writer_id:
            self._fresh.pop(manifest.writer_id, None)
            self.writers.end(manifest.writer_id)
            manifest.writer_id = None
        return manifest.id

    def abandon(self, manifest: Manifest) -> None:
        """Give up an unsaved image: the chunks it stored new are garbage for the next
        collection at once (its writer is known to have failed)."""
        if manifest.writer_id:
            fresh = self._fresh.pop(manifest.writer_id, [])
            self.writers.abandoned(manifest.writer_id, fresh)
            manifest.writer_id = None


VERIFY_MARKER = "state/last-verify"


def mark_verified(store: ObjectStore, at: datetime) -> None:
    """A verify of the repository ran at ``at``: backups check reused chunks once again."""
    store.put(VERIFY_MARKER, json.dumps({"at": at.isoformat()}).encode())


def verify_marker(store: ObjectStore) -> datetime | None:
    try:
        return datetime.fromisoformat(json.loads(store.get(VERIFY_MARKER))["at"])
    except ObjectMissing:
        return None
    except (ValueError, KeyError, TypeError):
        return datetime.now(UTC)  # unreadable: as if a verify just ran (check everything)


class ReuseChecks:
    """The cheap check of chunks a backup references without storing them: each once per
    image, none of the trusted previous image's."""

    def __init__(self, chunks: ChunkStore, trusted: frozenset[str]):
        self.chunks = chunks
        self.trusted = trusted
        self.done: set[str] = set()
        self._lock = threading.Lock()
        self.stats = collections.Counter(checked_chunks=0, damaged_reused=0)

    def _first(self, digest: str) -> bool:
        with self._lock:
            if digest in self.trusted or digest in self.done:
                return False
            self.done.add(digest)
            return True

    def _found(self, digest: str, problem: str | None) -> bool:
        with self._lock:
            self.stats["checked_chunks"] += 1
            if problem is not None:
                self.stats["damaged_reused"] += 1
                self.done.discard(digest)
        if problem is not None:
            log.warning("chunk %s is damaged (%s): stored again", digest, problem)
            self.chunks.quarantine(digest)
        return problem is None

    def sound(self, digest: str, data) -> bool:
        """True when the stored chunk may be named; False when it was found damaged (and is
        moved aside, so storing ``data`` again stores it)."""
        if not self._first(digest):
            return True
        return self._found(digest, self.chunks.check(digest, data, length=len(data)))

    def carried(self, carried: list[tuple[int, str]], length: Callable[[int], int]) -> list[int]:
        """Of the blocks carried over from the previous image, those to read again: gone, or
        damaged (checked unless trusted). Every one kept is touched: in use again for GC."""
        store = self.chunks.store

        def keep(item: tuple[int, str]) -> bool:
            index, digest = item
            if not self._first(digest):
                return store.touch(chunk_key(digest))
            return self._found(digest, self.chunks.check(digest, length=length(index))) and (
                store.touch(chunk_key(digest))
            )

        with ThreadPoolExecutor(
            threads_for(self.chunks.store), thread_name_prefix="repo-check"
        ) as pool:
            kept = list(pool.map(keep, carried))
        return [index for (index, _d), ok in zip(carried, kept, strict=True) if not ok]


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
