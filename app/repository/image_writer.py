"""Writing a disk image: blocks in, chunks stored, a manifest out.

Design note (pbs-datastore's fixed-index writer). The source is cut into blocks of the
repository's block size; each block is hashed, sealed and stored on a thread pool, a bounded
number in flight, and all-zero blocks are not stored. With the previous image and the byte
areas changed since (changed-block tracking) only blocks touching a changed area are read;
the others keep the previous image's digests, and those chunks are touched so a concurrent
garbage collection sees them used again (it also spares the writer record this writer holds
from its first block to the saved manifest).

Saving makes the chunks durable first, then, under the shared ``gc`` lock and after checking
that every chunk it names still exists, the manifest: a manifest never names a chunk a sweep
removed.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, BinaryIO

from app.repository.chunks import WRITE_THREADS, ChunkStore, chunk_key
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


class ImageWriter:
    def __init__(self, chunks: ChunkStore, writers: WriterRecords, block_size: int):
        self.chunks = chunks
        self.store = chunks.store
        self.writers = writers
        self.block_size = block_size
        self._zero = zero_block(block_size)

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
        writer_id = self.writers.begin(previous.id if previous else None)
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
            self.writers.end(writer_id)
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

        with ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="repo-write") as pool:
            try:
                for index, data, buf in reader:
                    stats["read_bytes"] += len(data)
                    future = pool.submit(self._store_block, data)
                    inflight.append((index, len(data), future, buf))
                    if len(inflight) >= 2 * WRITE_THREADS:
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
        return self.chunks.put(data, durable=False)

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
            self.writers.end(manifest.writer_id)
            manifest.writer_id = None
        return manifest.id

    def abandon(self, manifest: Manifest) -> None:
        """Give up an unsaved image: its chunks become garbage for the next collection."""
        if manifest.writer_id:
            self.writers.end(manifest.writer_id)
            manifest.writer_id = None


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
