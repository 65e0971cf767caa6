"""Pack files: many small chunks (mail messages) in one object, found through an index.

One file per message costs a file creation, a rename and often a new directory in the
kernel: more than fetching, hashing, compressing and encrypting the message together. A
backup therefore appends small sealed chunks to an open pack and writes it whole when it
is full or when the backup makes its work durable (``flush``)::

    packs/<2 hex>/<pack id>   framed sealed chunks one after another
    index/<pack id>           which chunks the pack holds, where: written after the pack

A pack describes itself: each chunk is framed by a 48-byte header (``BWP1``, its digest,
its sealed length, and 8 bytes of blake3 over those), so the index is only a shortcut. A
lost or torn index is rebuilt by scanning the pack (:func:`scan_pack`); a pack cut short
loses only the chunks past the cut; a flipped bit spoils the one chunk it lands in (the
scan finds the next frame by its magic when a header is hit). Packs written before frames
existed (no ``BWP1`` at offset 0) are read through their index as ever; garbage collection
rewrites them framed when it repacks them, and never removes one it cannot account for.

A chunk's seal names its digest, not its place, so garbage collection can copy a chunk into
a new pack byte for byte. Rules that keep a crash harmless:

* The pack is written before its index and removed after it: an index never names a pack
  that was not there. A pack without an index (a crash between the two) is scanned: a
  reader finds its chunks, garbage collection writes its index and then judges it like any.
* An index whose pack is missing is ignored, one whose pack is shorter than it says is
  replaced by what a scan finds, so nothing dedups against chunks that are not there.
* Two processes writing at once may both store a chunk; either copy serves a read.

Using a chunk again touches its pack (once a minute at most): garbage collection spares
a pack written or touched after its cutoff, as it spares loose chunks.
"""

from __future__ import annotations

import contextlib
import secrets
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import blake3

from app.repository.backend import ObjectMissing, ObjectStore

# Chunks up to this size go into packs; larger ones (disk blocks, big messages) stay loose.
PACK_LIMIT = 1024 * 1024
# A pack is written when it holds this much (or at the next flush, whichever comes first).
PACK_TARGET = 8 * 1024 * 1024
_MAGIC = b"BWIDX1\n"
_ENTRY = struct.Struct(">32sQI")  # digest, offset, sealed length
_CHECK = 32  # blake3 of everything before it: a torn index is refused, not half-read
FRAME_MAGIC = b"BWP1"
_FRAME = struct.Struct(">4s32sI")  # magic, digest, sealed length; then 8 check bytes
FRAME_SIZE = _FRAME.size + 8
TOUCH_EVERY_S = 60.0


@dataclass(frozen=True)
class PackEntry:
    digest: str
    offset: int
    length: int


def pack_key(pack_id: str) -> str:
    return f"packs/{pack_id[:2]}/{pack_id}"


def index_key(pack_id: str) -> str:
    return f"index/{pack_id}"


def frame(digest: str, length: int) -> bytes:
    """The header that precedes a sealed chunk in a pack."""
    head = _FRAME.pack(FRAME_MAGIC, bytes.fromhex(digest), length)
    return head + blake3.blake3(head).digest(length=8)


def scan_pack(data: bytes) -> tuple[list[PackEntry], bool]:
    """The chunks a pack's frames describe, and whether anything did not read cleanly (a
    damaged header skipped to the next magic, or a frame cut off at the end). A pack of
    the unframed first format yields no entries."""
    entries: list[PackEntry] = []
    damaged, pos, end = False, 0, len(data)
    view = memoryview(data)
    while pos + FRAME_SIZE <= end:
        head = view[pos : pos + _FRAME.size]
        magic, digest, length = _FRAME.unpack(head)
        check = view[pos + _FRAME.size : pos + FRAME_SIZE]
        if magic == FRAME_MAGIC and blake3.blake3(head).digest(length=8) == check:
            if pos + FRAME_SIZE + length > end:
                return entries, True  # cut short: what lies past the cut is lost
            entries.append(PackEntry(digest.hex(), pos + FRAME_SIZE, length))
            pos += FRAME_SIZE + length
            continue
        damaged = True
        pos = data.find(FRAME_MAGIC, pos + 1)
        if pos < 0:
            break
    if 0 <= pos < end:
        damaged = True  # a frame header cut off at the end
    return entries, damaged


def encode_index(entries: Iterable[PackEntry]) -> bytes:
    body = bytearray(_MAGIC)
    for e in entries:
        body += _ENTRY.pack(bytes.fromhex(e.digest), e.offset, e.length)
    return bytes(body) + blake3.blake3(body).digest()


def decode_index(data: bytes) -> list[PackEntry]:
    """The entries, or ValueError for anything but a whole index."""
    body, check = data[:-_CHECK], data[-_CHECK:]
    if not body.startswith(_MAGIC) or blake3.blake3(body).digest() != check:
        raise ValueError("not a whole pack index")
    rest = memoryview(body)[len(_MAGIC) :]
    if len(rest) % _ENTRY.size:
        raise ValueError("not a whole pack index")
    return [
        PackEntry(digest.hex(), offset, length)
        for digest, offset, length in _ENTRY.iter_unpack(rest)
    ]


class PackIndex:
    """Where each packed chunk is: loaded from ``index/`` on first use, refreshed on a miss
    when reading (another process may have written packs since)."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self._lock = threading.Lock()
        self._where: dict[bytes, tuple[str, int, int]] = {}
        self._loaded: set[str] = set()
        self._touched: dict[str, float] = {}
        self._ready = False

    def locate(self, digest: str, *, refresh: bool = False) -> tuple[str, int, int] | None:
        if refresh or not self._ready:
            self.refresh()
        return self._where.get(bytes.fromhex(digest))

    def refresh(self) -> None:
        with self._lock:
            for pack_id, entries in self._read_new_indexes():
                self.add(pack_id, entries)
            self._ready = True

    def add(self, pack_id: str, entries: Iterable[PackEntry]) -> None:
        for e in entries:
            self._where[bytes.fromhex(e.digest)] = (pack_id, e.offset, e.length)
        self._loaded.add(pack_id)

    def forget(self, pack_id: str) -> None:
        """A pack is gone (garbage collection removed or rewrote it): read every index
        again on the next lookup. Dropping only its entries could lose a chunk whose other
        copy (the rewritten pack) was loaded first and then overwritten by this one's."""
        with self._lock:
            self._where, self._loaded, self._ready = {}, set(), False
            self._touched.pop(pack_id, None)

    def _read_new_indexes(self) -> Iterator[tuple[str, list[PackEntry]]]:
        indexed = set()
        for key in self.store.list("index/"):
            pack_id = key.removeprefix("index/")
            indexed.add(pack_id)
            if pack_id in self._loaded:
                continue
            entries = load_entries(self.store, pack_id)
            if entries is not None:
                yield pack_id, entries
        # Packs whose index is lost: their frames say what they hold (garbage collection
        # writes the index again; until then each reader scans).
        for key in self.store.list("packs/"):
            pack_id = key.rsplit("/", 1)[-1]
            if pack_id in indexed or pack_id in self._loaded:
                continue
            entries = load_entries(self.store, pack_id)
            if entries is not None:
                yield pack_id, entries

    def touch(self, pack_id: str) -> bool:
        """Tell a concurrent garbage collection the pack is in use; False if it is gone."""
        now = time.monotonic()
        if now - self._touched.get(pack_id, -TOUCH_EVERY_S) < TOUCH_EVERY_S:
            return True
        if not self.store.touch(pack_key(pack_id)):
            self.forget(pack_id)
            return False
        self._touched[pack_id] = now
        return True

    def forget_touches(self) -> None:
        self._touched.clear()

    def __len__(self) -> int:
        if not self._ready:
            self.refresh()
        return len(self._where)


def read_index(store: ObjectStore, pack_id: str) -> list[PackEntry] | None:
    """A pack's entries, or None when the index is torn or its pack is missing or short."""
    try:
        entries = decode_index(store.get(index_key(pack_id)))
    except (ObjectMissing, ValueError):
        return None
    size = store.size(pack_key(pack_id))
    if size is None or any(e.offset + e.length > size for e in entries):
        return None
    return entries


def scan_stored_pack(store: ObjectStore, pack_id: str) -> tuple[list[PackEntry], bool] | None:
    """:func:`scan_pack` of a stored pack; None when the pack is gone."""
    try:
        return scan_pack(store.get(pack_key(pack_id)))
    except ObjectMissing:
        return None


def load_entries(store: ObjectStore, pack_id: str) -> list[PackEntry] | None:
    """A pack's entries from its index, or from its frames when the index is lost, torn
    or longer than the pack; None when neither says anything."""
    entries = read_index(store, pack_id)
    if entries is not None:
        return entries
    scanned = scan_stored_pack(store, pack_id)
    return scanned[0] if scanned and scanned[0] else None


class PackWriter:
    """The open pack of one repository handle; threads append to it under a lock."""

    def __init__(self, store: ObjectStore, index: PackIndex):
        self.store = store
        self.index = index
        self._lock = threading.Lock()
        self._parts: list[bytes] = []
        self._entries: list[PackEntry] = []
        self._pending: set[str] = set()
        self._size = 0

    def holds(self, digest: str) -> bool:
        return digest in self._pending

    def append(self, digest: str, sealed_parts: list, *, durable: bool) -> bool:
        """Add a sealed chunk; False if this pack already holds it."""
        data = b"".join(bytes(p) if isinstance(p, memoryview) else p for p in sealed_parts)
        with self._lock:
            if digest in self._pending:
                return False
            self._entries.append(PackEntry(digest, self._size + FRAME_SIZE, len(data)))
            self._parts.append(frame(digest, len(data)))
            self._parts.append(data)
            self._pending.add(digest)
            self._size += FRAME_SIZE + len(data)
            if self._size >= PACK_TARGET:
                self._write_locked(durable=durable)
        return True

    def write(self, *, durable: bool = False) -> str | None:
        """Write the open pack and its index (durable at the store's next flush)."""
        with self._lock:
            return self._write_locked(durable=durable)

    def _write_locked(self, *, durable: bool) -> str | None:
        if not self._entries:
            return None
        pack_id = secrets.token_hex(16)
        # The pack first: an index must never name a pack that is not (yet) there.
        self.store.put(pack_key(pack_id), self._parts, durable=durable)
        self.store.put(index_key(pack_id), encode_index(self._entries), durable=durable)
        with self.index._lock:
            self.index.add(pack_id, self._entries)
        self._parts, self._entries, self._pending, self._size = [], [], set(), 0
        return pack_id


def write_index(store: ObjectStore, pack_id: str, entries: Iterable[PackEntry]) -> None:
    """A pack's index written anew (garbage collection, after a scan)."""
    store.put(index_key(pack_id), encode_index(entries))


def write_pack(store: ObjectStore, chunks: list[tuple[str, bytes]]) -> str:
    """A new pack of already-sealed chunks (garbage collection's repack), durable now."""
    entries, parts, offset = [], [], 0
    for digest, data in chunks:
        entries.append(PackEntry(digest, offset + FRAME_SIZE, len(data)))
        parts += [frame(digest, len(data)), data]
        offset += FRAME_SIZE + len(data)
    pack_id = secrets.token_hex(16)
    store.put(pack_key(pack_id), parts)
    store.put(index_key(pack_id), encode_index(entries))
    return pack_id


def remove_pack(store: ObjectStore, pack_id: str) -> None:
    """The index first: a pack without an index is garbage, an index without a pack a lie."""
    with contextlib.suppress(ObjectMissing):
        store.delete(index_key(pack_id))
    with contextlib.suppress(ObjectMissing):
        store.delete(pack_key(pack_id))
