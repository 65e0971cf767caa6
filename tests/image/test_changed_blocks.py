"""Changed block tracking is trusted only as far as it earns: the read plan of one disk.

The lab's CBT is worked out from disk content, so it never misses a write; to exercise the
distrust (an answer covering the whole disk, a missed write) vCenter's answer is given here
by a stand-in function, named as such. The repository, the images and the sampled re-reads
are real. The last tests check the lab's own QueryChangedDiskAreas through the adapter.
"""

from __future__ import annotations

import io
import random

import pytest

from app.adapters import vsphere
from app.adapters.vsphere.snapshot_disks import (
    ChangedBlocksUnavailable,
    changed_areas,
    snapshot_disks,
)
from app.repository.manifest import BLOCK_SIZE
from app.repository.store import open_repository_at
from app.strategies.vm_image import CHANGED, FULL, covered_bytes, plan_read, sample_unchanged

BLOCKS = 8


@pytest.fixture
def repo(tmp_path):
    return open_repository_at(tmp_path / "repo", create=True, encrypted=False)


def image(seed: int) -> bytearray:
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(BLOCKS * BLOCK_SIZE))
    data[2 * BLOCK_SIZE : 3 * BLOCK_SIZE] = bytes(BLOCK_SIZE)  # a zero block
    return data


def backed_up(repo, data: bytes):
    manifest = repo.write_image(io.BytesIO(data), size=len(data), source_info={})
    repo.save_manifest(manifest)
    return manifest


def plan(repo, previous, current: bytes, stand_in_cbt_answer, samples: int = BLOCKS):
    """Plan the read of ``current`` as the strategy does, vCenter's answer from a stand-in."""

    def stand_in_query(change_id: str):
        assert change_id == "52 1a-old/7"
        return stand_in_cbt_answer()

    return plan_read(
        size=len(current),
        earlier={"manifest": previous.id, "change_id": "52 1a-old/7"},
        change_id="52 1a-new/9",
        query=stand_in_query,
        load_previous=repo.load_manifest,
        check=lambda prev, areas: sample_unchanged(
            repo, prev, io.BytesIO(current), areas, samples=samples, rng=random.Random(1)
        ),
    )


def test_a_true_cbt_answer_reads_only_changed_blocks_and_gives_the_same_image(repo):
    before = image(1)
    previous = backed_up(repo, bytes(before))
    after = bytearray(before)
    after[5 * BLOCK_SIZE + 10 : 5 * BLOCK_SIZE + 20] = b"x" * 10
    areas = [(5 * BLOCK_SIZE + 10, 10)]

    chosen = plan(repo, previous, bytes(after), lambda: areas)
    assert chosen.mode == CHANGED and chosen.changed == areas

    read = []

    class Watched(io.BytesIO):
        def seek(self, pos, whence=0):
            read.append(pos // BLOCK_SIZE)
            return super().seek(pos, whence)

    incremental = repo.write_image(
        Watched(bytes(after)),
        size=len(after),
        source_info={},
        previous=chosen.previous,
        changed=chosen.changed,
    )
    assert read == [5] and incremental.read_mode == "changed-blocks"
    full = repo.write_image(io.BytesIO(bytes(after)), size=len(after), source_info={})
    assert incremental.blocks == full.blocks and incremental.image_hash == full.image_hash
    repo.abandon(full)
    repo.abandon(incremental)


def test_a_cbt_answer_covering_the_whole_disk_falls_back_to_a_full_read(repo):
    data = bytes(image(2))
    previous = backed_up(repo, data)
    chosen = plan(repo, previous, data, lambda: [(0, len(data) // 2), (len(data) // 2, len(data))])
    assert chosen.mode == FULL and chosen.warning
    assert "whole disk" in chosen.reason


def test_cbt_that_missed_a_write_is_caught_by_the_sampled_re_read(repo):
    before = image(3)
    previous = backed_up(repo, bytes(before))
    after = bytearray(before)
    after[1 * BLOCK_SIZE] ^= 0xFF  # written, but CBT reports only block 6
    after[6 * BLOCK_SIZE] ^= 0xFF
    chosen = plan(repo, previous, bytes(after), lambda: [(6 * BLOCK_SIZE, 1)])
    assert chosen.mode == FULL and chosen.warning
    assert "blocks 1 changed" in chosen.reason and chosen.reset_tracking


def test_an_image_made_before_a_cbt_reset_gives_no_change_id_to_trust(repo):
    def never(*_):
        raise AssertionError("vCenter must not be asked: the earlier change id is void")

    chosen = plan_read(
        size=1,
        earlier={"manifest": "m", "change_id": "52 1a-old/7", "cbt_reset": True},
        change_id="52 1a-new/9",
        query=never,
        load_previous=never,
        check=never,
    )
    assert chosen.mode == FULL and not chosen.warning and not chosen.reset_tracking
    assert "was reset after the previous image" in chosen.reason


def test_sampled_re_read_of_unchanged_zero_and_data_blocks_agrees(repo):
    data = bytes(image(4))
    previous = backed_up(repo, data)
    assert sample_unchanged(repo, previous, io.BytesIO(data), [], samples=BLOCKS) == []
    assert covered_bytes([(0, 10), (5, 10), (100, 5)], 50) == 15


def test_no_earlier_image_or_no_change_id_means_a_full_read(repo):
    def never(_):
        raise AssertionError("vCenter must not be asked")

    def check(*_):
        return []

    first = plan_read(
        size=1, earlier=None, change_id="x", query=never, load_previous=never, check=check
    )
    assert first.mode == FULL
    untracked = plan_read(
        size=1,
        earlier={"manifest": "m", "change_id": None},
        change_id=None,
        query=never,
        load_previous=never,
        check=check,
    )
    assert untracked.mode == FULL and "off" in untracked.reason


def test_the_lab_tracks_changed_blocks_between_snapshots(lab, vc):
    """The lab's CBT (a stand-in for vCenter's, worked out from disk content) answers
    QueryChangedDiskAreas through the adapter: what changed, everything in use, refusals."""
    vm = lab.exchange_vm("EXCH-MBX01")  # changed block tracking on
    disk = vm["disks"][0]
    first = vsphere.create_snapshot(vc, vm["moref"], "cbt-1")
    with open(disk["local_path"], "r+b") as f:
        f.seek(3 * 65536 + 100)
        f.write(b"changed")
    second = vsphere.create_snapshot(vc, vm["moref"], "cbt-2")
    try:
        ids = {d.key: d.change_id for d in snapshot_disks(vc, first)}
        later = {d.key: d.change_id for d in snapshot_disks(vc, second)}
        assert ids[2000] and later[2000] and ids[2000] != later[2000]
        size = disk["content_bytes"]
        assert changed_areas(vc, vm["moref"], second, 2000, size, ids[2000]) == [(3 * 65536, 65536)]
        in_use = changed_areas(vc, vm["moref"], second, 2000, size, "*")
        # Every fourth 64 KiB of a lab disk is zero, block 3 among them until written above.
        assert covered_bytes(in_use, size) == size * 3 // 4 + 65536
        with pytest.raises(ChangedBlocksUnavailable, match="unknown change id"):
            changed_areas(vc, vm["moref"], second, 2000, size, "52 00 reset/1")
    finally:
        vsphere.remove_snapshot(vc, second)
        vsphere.remove_snapshot(vc, first)


def test_a_vm_without_changed_block_tracking_says_so(lab, vc):
    vm = lab.exchange_vm("EXCH-MBX02")["moref"]  # tracking off
    snapshot = vsphere.create_snapshot(vc, vm, "cbt-probe")
    try:
        assert {d.change_id for d in snapshot_disks(vc, snapshot)} == {None}
        with pytest.raises(ChangedBlocksUnavailable, match="not enabled"):
            changed_areas(vc, vm, snapshot, 2000, 4 * 1024 * 1024, "*")
    finally:
        vsphere.remove_snapshot(vc, snapshot)
