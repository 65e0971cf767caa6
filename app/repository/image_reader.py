"""Reading and verifying a disk image: a manifest in, checked bytes out.

Design note (pbs-datastore's fixed-index reader and verify). Every block read is checked
against its digest (the chunk store does that) and against the length the manifest gives
it; damage names the block and the image. Reading keeps a bounded number of blocks in
flight on a thread pool so a restore streams while the next blocks are fetched; all-zero
blocks are served without touching the store. Verifying re-reads each distinct chunk once
(all of them, or a random share) and reports every block that uses a damaged one.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from app.repository.backend import ObjectMissing
from app.repository.chunks import WORKERS, ChunkStore, threads_for
from app.repository.codec import OPEN_SLACK
from app.repository.errors import ChunkDamaged, RepositoryError
from app.repository.manifest import Manifest, decode_manifest, manifest_key, zero_block


class ImageReader:
    def __init__(self, chunks: ChunkStore):
        self.chunks = chunks
        self.store = chunks.store

    def load_manifest(self, manifest_id: str) -> Manifest:
        try:
            stored = self.store.get(manifest_key(manifest_id))
        except (ObjectMissing, ValueError):
            raise RepositoryError(f"no image {manifest_id!r} in the repository") from None
        return decode_manifest(stored, manifest_id, self.chunks.codec)

    def list_manifests(self) -> list[str]:
        return sorted(k.removeprefix("manifests/") for k in self.store.list("manifests/"))

    def read_image(
        self,
        manifest: Manifest,
        offset: int = 0,
        length: int | None = None,
        *,
        reuse_buffers: bool = False,
    ) -> Iterator[bytes]:
        """The image's bytes from ``offset``; every block is checked against its digest.

        Blocks are read, checked, decrypted and decompressed ahead of the caller on a thread
        pool (twice as many in flight as threads: the cores stay busy while the caller
        writes), so memory stays bounded. ``reuse_buffers``: pieces are views of a fixed pool
        of block buffers, each valid only until the next piece is asked for; that spares two
        block allocations (and their page faults) per block. For callers that write each
        piece before asking for the next (a restore's ``/folder`` PUT, a file, a volume),
        never for ones that keep pieces.
        """
        size = manifest.size
        if offset < 0 or offset > size:
            raise ValueError(f"offset {offset} is outside the image (size {size})")
        end = size if length is None else min(size, offset + max(0, length))
        if end <= offset:
            return
        bs = manifest.block_size
        first, last = offset // bs, (end - 1) // bs
        threads = threads_for(self.chunks.store)
        depth = 2 * threads
        free: collections.deque[bytearray] = collections.deque()
        if reuse_buffers:
            # One per block in flight and one for the piece the caller holds.
            free.extend(bytearray(bs + OPEN_SLACK) for _ in range(depth + 1))

        def fetch(index: int, out: bytearray | None) -> Any:
            digest = manifest.blocks[index]
            want = manifest.block_length(index)
            if digest is None:
                zero = zero_block(manifest.block_size)
                return zero if want == len(zero) else bytes(want)
            try:
                if out is None:
                    data = self.chunks.load(digest)
                else:
                    data = self.chunks.load_into(digest, out)
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

        with ThreadPoolExecutor(threads, thread_name_prefix="repo-read") as pool:
            pending: collections.deque[tuple[Future, bytearray | None]] = collections.deque()
            indexes = iter(range(first, last + 1))

            def submit(index: int) -> None:
                out = free.popleft() if reuse_buffers else None
                pending.append((pool.submit(fetch, index, out), out))

            try:
                for index in indexes:
                    submit(index)
                    if len(pending) >= depth:
                        break
                current = first
                held: bytearray | None = None  # the buffer of the piece the caller has
                while pending:
                    future, out = pending.popleft()
                    data = future.result()
                    if held is not None:
                        free.append(held)  # the caller asked for more: done with the last
                    held = out
                    nxt = next(indexes, None)
                    if nxt is not None:
                        submit(nxt)
                    start = current * bs
                    lo = max(offset, start) - start
                    hi = min(end, start + len(data)) - start
                    yield data if (lo == 0 and hi == len(data)) else data[lo:hi]
                    current += 1
            finally:
                for fut, _out in pending:
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
                data = self.chunks.load(digest)
                if len(data) != manifest.block_length(index):
                    return index, ChunkDamaged(
                        digest, "wrong length", index=index, manifest_id=manifest.id
                    )
            except ChunkDamaged as exc:
                return index, ChunkDamaged(digest, exc.reason, index=index, manifest_id=manifest.id)
            return index, None

        threads = threads_for(self.chunks.store, WORKERS)
        with ThreadPoolExecutor(threads, thread_name_prefix="repo-verify") as pool:
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
