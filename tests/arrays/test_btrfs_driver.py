"""The reference btrfs array, for real on a loop-mounted btrfs."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest

from app.adapters.arrays import (
    ArrayUnavailable,
    BtrfsArray,
    NotSupported,
    SnapshotNotFound,
    VolumeNotFound,
    derived_naa,
    naa_of_lun,
    open_array,
)

MiB = 1024 * 1024
DB, LOG = derived_naa("test/db"), derived_naa("test/log")


def write(array: BtrfsArray, naa: str, offset: int, data: bytes) -> None:
    with array.open_volume(naa, write=True) as f:
        f.seek(offset)
        f.write(data)


def read(fileobj, offset: int = 0, length: int = -1) -> bytes:
    fileobj.seek(offset)
    return fileobj.read(length)


def group_of_two(array: BtrfsArray, size: int = 16 * MiB) -> None:
    array.create_volume("EXCH-DB", DB, size)
    array.create_volume("EXCH-DB", LOG, size)


def test_volumes_are_listed_by_naa_id_with_their_group(array):
    group_of_two(array)
    array.create_volume("OTHER", derived_naa("other"), MiB)
    volumes = {v.naa_id: v for v in array.list_volumes()}
    assert set(volumes) == {DB, LOG, derived_naa("other")}
    assert volumes[DB].group == "EXCH-DB" and volumes[DB].size_bytes == 16 * MiB
    assert array.volume(DB.upper().replace("NAA.", "naa.")).naa_id == DB
    with pytest.raises(VolumeNotFound, match="has no volume"):
        array.volume(derived_naa("nowhere"))


def test_snapshot_lists_time_size_and_volumes_and_delete_is_idempotent(array):
    group_of_two(array)
    snap = array.create_snapshot([DB, LOG], "s1")
    assert snap.id == "EXCH-DB@s1"
    listed = array.list_snapshots("EXCH-DB")
    assert [s.id for s in listed] == ["EXCH-DB@s1"]
    assert listed[0].size_bytes == 32 * MiB
    assert set(listed[0].volumes) == {DB, LOG}
    assert listed[0].created_at == snap.created_at
    array.delete_snapshot(snap.id)
    array.delete_snapshot(snap.id)
    assert array.list_snapshots() == []
    with pytest.raises(SnapshotNotFound):
        array.snapshot(snap.id)


def test_consistency_group_snapshot_is_one_point_in_time_across_both_volumes(array):
    """A writer writes record i to the database volume, then record i to the log volume,
    each write durable before the next (as a LUN with write-through). Every snapshot taken
    meanwhile must hold a prefix of that sequence across both volumes: record i on the log
    only if it is on the database too, and no gaps."""
    group_of_two(array, 8 * MiB)
    stop = threading.Event()
    block = 512

    def writer() -> None:
        fds = [os.open(array._find_volume(n), os.O_WRONLY | os.O_DSYNC) for n in (DB, LOG)]
        try:
            i = 0
            while not stop.is_set() and (i + 1) * block < 8 * MiB:
                i += 1
                record = i.to_bytes(8, "little") * (block // 8)
                for fd in fds:  # both volumes, in order: a pair of dependent writes
                    os.pwrite(fd, record, i * block)
        finally:
            for fd in fds:
                os.close(fd)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        snaps = []
        for n in range(20):
            stop.wait(0.02)
            snaps.append(array.create_snapshot([DB, LOG], f"atomic-{n}"))
    finally:
        stop.set()
        thread.join()
    counts = []
    for snap in snaps:
        seen = {}
        for naa in (DB, LOG):
            with array.open_snapshot_volume(snap.id, naa) as f:
                data = f.read()
            records = [
                int.from_bytes(data[i * block : i * block + 8], "little")
                for i in range(1, len(data) // block)
            ]
            present = [r for r in records if r]
            # A prefix: records 1..k, each where it belongs, nothing after.
            assert present == list(range(1, len(present) + 1)), f"gap in {naa} of {snap.id}"
            seen[naa] = len(present)
        # Writes to both land in both or neither; only the pair in flight at the instant
        # may have its first half (database) without its second (log).
        assert seen[DB] - seen[LOG] in (0, 1), (snap.id, seen)
        counts.append(seen[DB])
    assert counts[-1] > 0, "the writer wrote nothing during the snapshots"


def test_snapshot_of_volumes_in_two_groups_is_refused(array):
    array.create_volume("A", DB, MiB)
    array.create_volume("B", LOG, MiB)
    with pytest.raises(NotSupported, match="not in one consistency group"):
        array.create_snapshot([DB, LOG], "s")


def test_clone_round_trips_byte_for_byte_under_new_naa_ids(array):
    group_of_two(array)
    payload = {naa: random.randbytes(3 * MiB) for naa in (DB, LOG)}
    for naa, data in payload.items():
        write(array, naa, MiB, data)
    snap = array.create_snapshot([DB, LOG], "s1")
    clones = array.clone_snapshot(snap.id, "inspect-1")
    assert {c.source_naa_id for c in clones} == {DB, LOG}
    assert not {c.naa_id for c in clones} & {DB, LOG}  # a LUN identity of their own
    for c in clones:
        with array.open_volume(c.naa_id) as f, array.open_volume(c.source_naa_id) as orig:
            assert f.read() == orig.read()
        assert c.clone_of == snap.id
    # Writing the clone leaves the original and the snapshot alone.
    write(array, clones[0].naa_id, MiB, b"x" * 4096)
    with array.open_volume(clones[0].source_naa_id) as f:
        assert read(f, MiB, 3 * MiB) == payload[clones[0].source_naa_id]
    array.delete_clone("inspect-1")
    array.delete_clone("inspect-1")
    assert {v.naa_id for v in array.list_volumes()} == {DB, LOG}


def test_revert_after_corruption_brings_back_the_old_bytes(array):
    group_of_two(array)
    good = {naa: random.randbytes(2 * MiB) for naa in (DB, LOG)}
    for naa, data in good.items():
        write(array, naa, 0, data)
    snap = array.create_snapshot([DB, LOG], "before")
    for naa in (DB, LOG):
        write(array, naa, 4096, b"\xde\xad" * 65536)  # simulated corruption
    array.revert_to_snapshot(snap.id)
    for naa, data in good.items():
        with array.open_volume(naa) as f:
            assert read(f, 0, 2 * MiB) == data
    # The group is whole again and can be snapshotted and reverted again.
    assert not [p for p in (array.root / "groups").iterdir() if p.name.startswith(".")]
    write(array, LOG, 0, b"\x00" * 4096)
    array.revert_to_snapshot(snap.id, [LOG])  # one volume only
    with array.open_volume(LOG) as f:
        assert read(f, 0, 2 * MiB) == good[LOG]


def test_changed_areas_cover_every_difference_and_little_more(array):
    size = 32 * MiB
    array.create_volume("G", DB, size)
    write(array, DB, 0, random.randbytes(size))
    first = array.create_snapshot([DB], "one")
    rng = random.Random(7)
    touched = sorted(rng.randrange(0, size // 4096) * 4096 for _ in range(40))
    for off in touched:
        write(array, DB, off, rng.randbytes(4096))
    second = array.create_snapshot([DB], "two")
    areas = array.changed_areas(first.id, second.id, DB)
    with (
        array.open_snapshot_volume(first.id, DB) as a,
        array.open_snapshot_volume(second.id, DB) as b,
    ):
        old, new = a.read(), b.read()
    for block in range(0, size, 4096):
        if old[block : block + 4096] != new[block : block + 4096]:
            assert any(o <= block and block + 4096 <= o + n for o, n in areas), block
    assert sum(n for _, n in areas) <= len(touched) * 4096
    assert array.changed_areas(second.id, second.id, DB) == []


def test_allocated_areas_skip_holes(array):
    array.create_volume("G", DB, 64 * MiB)
    write(array, DB, 8 * MiB, b"y" * MiB)
    snap = array.create_snapshot([DB], "s")
    assert array.allocated_areas(snap.id, DB) == [(8 * MiB, MiB)]


def test_errors_name_the_array_and_what_to_do(tmp_path: Path, array):
    with pytest.raises(ArrayUnavailable, match="not btrfs"):
        BtrfsArray(tmp_path, "plain").check()
    with pytest.raises(ArrayUnavailable, match="does not exist"):
        BtrfsArray(tmp_path / "missing", "gone").check()
    with pytest.raises(ArrayUnavailable, match="driver"):
        open_array({"driver": "netapp-9000"})
    with pytest.raises(ArrayUnavailable, match="absolute mount path"):
        open_array({"driver": "btrfs", "path": "relative"})
    with pytest.raises(SnapshotNotFound, match="'test-array' has no snapshot G@nope"):
        array.revert_to_snapshot("G@nope")
    assert "btrfs array at" in array.check()


def test_naa_of_an_rdm_lun_from_device_name_or_lun_uuid():
    naa = "naa.6001405" + "a" * 25
    assert naa_of_lun(f"/vmfs/devices/disks/{naa}", None) == naa
    assert naa_of_lun(None, "0200000000" + naa[4:] + "46494c45494f") == naa
    assert naa_of_lun("/vmfs/devices/disks/mpx.vmhba1:C0:T0:L0", None) is None
