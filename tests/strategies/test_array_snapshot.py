"""The array snapshot strategy driven on its own: it finds the database's LUNs through the
services it is handed, freezes the guest with the table's quiescer, snapshots the consistency
group on a real btrfs array, copies the volumes off-host (the next copy builds on the earlier
snapshot), removes only Bulwark's snapshots at retention, and cleans up what a dead run left."""

from __future__ import annotations

import random

import pytest

from app.domain.protection import Consistency as C
from app.domain.protection import CopyLocation, ProtectionMethod
from app.domain.protection import DatabaseLayout as L
from app.protection.bindings.arrays import DatabaseVolumes
from app.strategies.array_snapshot import ArraySnapshot
from app.strategies.base import PointView, PrimaryCopy
from tests.arrays.conftest import array, array_path, btrfs_root, lun_naa  # noqa: F401
from tests.protection.conftest import wait_for_guest_log
from tests.strategies.conftest import FakeContext, backup_run, policy, target

pytestmark = pytest.mark.lab

ARRAY = 5
LUN_BYTES = 4 * 1024 * 1024
FREEZE, THAW = "freeze-exchange.cmd DB02 & sleep 0.2", "thaw-exchange.cmd DB02"


@pytest.fixture
def luns(lab, array, services):  # noqa: F811
    db, logs = lun_naa(lab, "EXCH-MBX02", 2016), lun_naa(lab, "EXCH-MBX02", 2032)
    group = "EXCH-MBX02-DB02"
    for naa in (db, logs):
        array.create_volume(group, naa, LUN_BYTES)
        with array.open_volume(naa, write=True) as f:
            f.write(random.randbytes(LUN_BYTES // 2))
    services.arrays[ARRAY] = array
    services.volumes = DatabaseVolumes(ARRAY, "test-array", {"database": db, "logs": logs}, group)
    return group


def array_run(lab, services, job_id: int, **over):
    ctx = FakeContext(job_id=job_id)
    fields = {"pre_script": FREEZE, "post_script": THAW, "keep_on_primary": 3, **over}
    run = backup_run(
        ctx, policy(C.HOT_APPLICATION, **fields), target(lab, "EXCH-MBX02", L.RDM_PHYSICAL, 2)
    )
    ArraySnapshot(services).run(run)
    return ctx, run


def test_freeze_snapshot_thaw_and_copy_then_copy_only_what_changed(
    lab,
    services,
    luns,
    repository,
    array,  # noqa: F811
):
    ctx, first = array_run(lab, services, 9001, repository_id=repository)
    assert first.consistency_reached == C.HOT_APPLICATION  # the VSS-aware freeze ran
    freeze, thaw = wait_for_guest_log(lab, first.target.vm_moref, 2)
    assert "freeze" in freeze["arguments"] and "thaw" in thaw["arguments"]
    locations = [c.location for c in first.copies]
    assert locations == [CopyLocation.ARRAY_SNAPSHOT] + [CopyLocation.REPOSITORY] * 2
    assert first.details["array_snapshot"] in {s.id for s in array.list_snapshots(luns)}
    assert first.details["copied_from"] is None
    assert {x["kind"] for x in ctx.leftovers} == {"array_snapshot", "repository_image"}

    services.points = [
        (ProtectionMethod.ARRAY_SNAPSHOT, PointView(1, dict(first.details), tuple(first.copies)))
    ]
    _, second = array_run(lab, services, 9002, repository_id=repository)
    assert second.details["copied_from"] == first.details["array_snapshot"]


def test_without_a_freeze_command_the_snapshot_is_crash_consistent(lab, services, luns):
    ctx, run = array_run(lab, services, 9003, pre_script=None, post_script=None)
    assert run.consistency_reached == C.CRASH
    assert any("asked for hot_application but reached crash" in w for w in ctx.warnings())
    assert [c.location for c in run.copies] == [CopyLocation.ARRAY_SNAPSHOT]  # no repository


def test_retention_and_cleanup_touch_only_bulwark_snapshots_the_catalog_does_not_keep(
    lab,
    services,
    luns,
    array,  # noqa: F811
):
    _, ours = array_run(lab, services, 9004)
    _, stray = array_run(lab, services, 9005)
    foreign = array.create_snapshot(sorted(services.volumes.naa_ids.values()), "operator-copy")
    services.on_primary = [
        PrimaryCopy(1, foreign.id, ARRAY, {}),
        PrimaryCopy(2, ours.details["array_snapshot"], ARRAY, {}),
    ]
    run = backup_run(FakeContext(), policy(C.CRASH), ours.target)
    assert ArraySnapshot(services).retain(run) == [2]
    left = {s.id for s in array.list_snapshots(luns)}
    assert foreign.id in left and ours.details["array_snapshot"] not in left

    # A dead run's snapshot goes, unless the catalog names it.
    services.named = {(CopyLocation.ARRAY_SNAPSHOT, foreign.id)}
    later = FakeContext(job_id=9005, attempt=2)
    later.leftovers = [
        {"kind": "array_snapshot", "connection_id": ARRAY, "snapshot": s}
        for s in (stray.details["array_snapshot"], foreign.id)
    ]
    ArraySnapshot(services).cleanup(later, list(later.leftovers))
    assert later.leftovers == []
    left = {s.id for s in array.list_snapshots(luns)}
    assert stray.details["array_snapshot"] not in left and foreign.id in left
