"""CBT caught missing a write is reset by the backup itself, and earns trust back in two steps.

The lab's changed block tracking is worked out from disk content and never misses a write, so
the lie comes from a stand-in: the lab's true answer with one written area left out (named
``cbt_that_missed_a_write``). Everything else is real: the lab's snapshots, the sampled
re-read, the ``ReconfigVM_Task`` reset (the lab forgets a VM's change ids when tracking goes
off) and the repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyVmomi import vim

from app.adapters import vsphere
from app.adapters.vsphere.snapshot_disks import ChangedBlocksUnavailable, changed_areas
from app.repository.manifest import BLOCK_SIZE
from app.strategies import vm_image
from tests.image.conftest import flat_disks, sha
from tests.image.test_image_backup import change_blocks, restore_as_new_disk, restored_file
from tests.protection.conftest import backup_now, events, job, restore_points

SERVER = "EXCH-MBX03"  # changed block tracking on
SYSTEM = 2000  # the system disk, where the stand-in hides a write


def latest_point(client, admin) -> dict:
    return max(restore_points(client, admin), key=lambda p: p["id"])


def disk_of(point: dict, key: int) -> dict:
    return next(d for d in point["details"]["disks"] if d["key"] == key)


def test_cbt_that_missed_a_write_is_reset_and_trusted_again_two_backups_later(
    client, admin, estate, runtime, worker, vc, image_policy, lab, monkeypatch
):
    policy = image_policy(SERVER)
    disks = {d["key"]: d for d in flat_disks(lab, SERVER)}
    moref = lab.exchange_vm(SERVER)["moref"]
    (first_job,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert first_job["state"] == "succeeded", first_job["error"]

    true_answer = vm_image.changed_areas
    hidden = range(1 * BLOCK_SIZE, 2 * BLOCK_SIZE)

    def cbt_that_missed_a_write(client_, vm, snapshot, key, size, change_id):
        areas = true_answer(client_, vm, snapshot, key, size, change_id)
        if key != SYSTEM:
            return areas
        return [(start, length) for start, length in areas if start not in hidden]

    monkeypatch.setattr(vm_image, "changed_areas", cbt_that_missed_a_write)
    change_blocks(disks[SYSTEM], [1, 2], b"M")  # block 1's write is the one CBT "misses"

    (caught,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert caught["state"] == "succeeded", caught["error"]
    detail = job(client, admin, caught["id"])
    warnings = [e["message"] for e in detail["events"] if e["level"] == "warning"]
    assert any("missed writes (blocks 1 changed" in m and "full read" in m for m in warnings)
    assert any("has been reset (off, then on)" in m for m in warnings)
    point = latest_point(client, admin)
    assert point["details"]["cbt_reset"] == {"caught_on": ["Hard disk 1"], "reset": True}
    system = disk_of(point, SYSTEM)
    assert system["read_mode"] == "full"
    assert system["stats"]["read_bytes"] == disks[SYSTEM]["content_bytes"]
    assert all(d["cbt_reset"] for d in point["details"]["disks"])
    # The full read holds the write CBT hid: restored byte for byte.
    done = restore_as_new_disk(client, admin, worker, point, SYSTEM)
    assert done["state"] == "succeeded", done["error"]
    restored = restored_file(lab, point, SYSTEM, done["id"])
    assert sha(restored.read_bytes()) == sha(Path(disks[SYSTEM]["local_path"]).read_bytes())

    # The lab's VM went through the reset: tracking is on again and the old change ids are gone.
    vm = vc.managed_object(vim.VirtualMachine, moref)
    assert vm.config.changeTrackingEnabled is True
    probe = vsphere.create_snapshot(vc, moref, "cbt-probe")
    try:
        with pytest.raises(ChangedBlocksUnavailable, match="unknown change id"):
            changed_areas(
                vc, moref, probe, SYSTEM, disks[SYSTEM]["content_bytes"], system["change_id"]
            )
    finally:
        vsphere.remove_snapshot(vc, probe)

    # The next backup trusts no earlier change id: every disk read in full.
    monkeypatch.undo()
    change_blocks(disks[SYSTEM], [3], b"N")
    (after_reset,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert after_reset["state"] == "succeeded", after_reset["error"]
    text = " ".join(events(job(client, admin, after_reset["id"])))
    assert "changed block tracking was reset after the previous image" in text
    point = latest_point(client, admin)
    assert point["details"]["read_mode"] == "full" and "cbt_reset" not in point["details"]
    assert all(d["change_id"] and not d.get("cbt_reset") for d in point["details"]["disks"])

    # The one after uses changed blocks again, from the change ids of the fresh tracking.
    change_blocks(disks[SYSTEM], [0], b"O")
    (trusted,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert trusted["state"] == "succeeded", trusted["error"]
    point = latest_point(client, admin)
    assert point["details"]["read_mode"] == "changed-blocks"
    assert {d["key"]: d["stats"]["read_bytes"] for d in point["details"]["disks"]} == {
        2000: BLOCK_SIZE,
        2016: 0,
        2032: 0,
    }
