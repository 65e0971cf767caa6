"""Which physical extents back a file (the FIEMAP ioctl), and what differs between two files
that share extents (btrfs snapshots of one volume).

A btrfs snapshot shares every extent with its source until either side is written: an area of
a volume whose logical range maps to the same physical bytes in two snapshots did not change
between them. Python has no FIEMAP binding, hence the few lines of ``struct`` below.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass

Area = tuple[int, int]  # (offset, length) in bytes

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
HEADER = struct.Struct("=QQIIII")  # fm_start, fm_length, fm_flags, mapped, count, reserved
EXTENT = struct.Struct("=QQQQQIIII")  # logical, physical, length, 2×reserved, flags, 3×reserved
BATCH = 1024

LAST = 0x1
UNKNOWN = 0x2
DELALLOC = 0x4
ENCODED = 0x8
INLINE = 0x200
NOT_COMPARABLE = UNKNOWN | DELALLOC | INLINE


@dataclass(frozen=True, slots=True)
class Extent:
    logical: int
    physical: int
    length: int
    flags: int

    @property
    def end(self) -> int:
        return self.logical + self.length


def extents(fd: int) -> list[Extent]:
    """Every extent of an open file, in logical order (holes are simply absent)."""
    found: list[Extent] = []
    start = 0
    size = os.fstat(fd).st_size
    while start < size:
        buf = bytearray(HEADER.size + BATCH * EXTENT.size)
        HEADER.pack_into(buf, 0, start, 0xFFFFFFFFFFFFFFFF - start, FIEMAP_FLAG_SYNC, 0, BATCH, 0)
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf, True)
        mapped = HEADER.unpack_from(buf, 0)[3]
        if mapped == 0:
            break
        last = False
        for i in range(mapped):
            logical, physical, length, _, _, flags, _, _, _ = EXTENT.unpack_from(
                buf, HEADER.size + i * EXTENT.size
            )
            found.append(Extent(logical, physical, length, flags))
            last = last or bool(flags & LAST)
        if last:
            break
        start = found[-1].end
    return found


def allocated(path: str) -> list[tuple[int, int]]:
    """Areas of a file that hold data (merged, clipped to the file size)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        areas = [(e.logical, min(e.end, size) - e.logical) for e in extents(f.fileno())]
    return merge([a for a in areas if a[1] > 0])


def merge(areas: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for offset, length in sorted(areas):
        if out and offset <= out[-1][0] + out[-1][1]:
            prev_off, prev_len = out[-1]
            out[-1] = (prev_off, max(prev_len, offset + length - prev_off))
        else:
            out.append((offset, length))
    return out


def _physical_at(ext: Extent, offset: int) -> tuple[int, int] | None:
    """What backs ``offset``: an identity comparable between files, or None if unknown."""
    if ext.flags & NOT_COMPARABLE:
        return None
    if ext.flags & ENCODED:
        # Compressed: offsets inside do not map linearly; only the very same extent at the
        # very same place is known to be the same data.
        return (ext.physical, ext.logical - offset)
    return (ext.physical + (offset - ext.logical), 0)


def changed(older: str, newer: str) -> list[tuple[int, int]]:
    """Areas of ``newer`` whose bytes may differ from ``older`` (a superset, never less)."""
    with open(older, "rb") as a, open(newer, "rb") as b:
        size_a, size_b = os.fstat(a.fileno()).st_size, os.fstat(b.fileno()).st_size
        ext_a, ext_b = extents(a.fileno()), extents(b.fileno())
    size = size_b
    bounds = {0, size}
    for e in (*ext_a, *ext_b):
        bounds.update(x for x in (e.logical, e.end) if x < size)
    points = sorted(b for b in bounds if b <= size)
    areas: list[tuple[int, int]] = []
    ia = ib = 0
    for lo, hi in zip(points, points[1:], strict=False):
        while ia < len(ext_a) and ext_a[ia].end <= lo:
            ia += 1
        while ib < len(ext_b) and ext_b[ib].end <= lo:
            ib += 1
        ea = ext_a[ia] if ia < len(ext_a) and ext_a[ia].logical <= lo else None
        eb = ext_b[ib] if ib < len(ext_b) and ext_b[ib].logical <= lo else None
        if lo >= size_a:
            same = eb is None  # the volume grew: a hole there still reads as zeros
        elif ea is None and eb is None:
            same = True  # a hole in both
        elif ea is None or eb is None:
            same = False
        else:
            pa, pb = _physical_at(ea, lo), _physical_at(eb, lo)
            same = pa is not None and pa == pb
        if not same:
            areas.append((lo, hi - lo))
    return merge(areas)
