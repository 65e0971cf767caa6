"""A worker killed with SIGKILL in the middle of copying a VM image: another worker takes the
job over, removes the dead one's snapshot and uncataloged image, backs up again, and garbage
collection then leaves a store holding exactly the cataloged images. A cancel mid-copy stops
promptly and leaves nothing behind; a restore killed while writing a new disk has its partial
file removed by the worker that takes it over."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.repository.gc import collect_garbage
from app.repository.manifest import BLOCK_SIZE
from app.repository.store import open_repository_at
from tests.image.conftest import flat_disks
from tests.lab_fixture import Lab, LabUnavailable, must_have_lab, running_lab
from tests.protection.conftest import (
    backup_now,
    bulwark_snapshots,
    children,
    events,
    job,
    restore_points,
    start_backup,
)
from tests.protection.test_cleanup import row, start_worker_process, wait_until

SERVER = "EXCH-MBX03"
MIB = 1024 * 1024
CRASH_DISK_MIB = 32


@pytest.fixture
def lab() -> Iterator[Lab]:
    """The lab with /folder held to 16 MiB/s: copying a 32 MiB disk takes about two seconds,
    long enough to kill the worker while it copies."""
    try:
        args = ["--disk-mib", str(CRASH_DISK_MIB), "--folder-mib-per-second", "16"]
        with running_lab(extra_args=args) as lab:
            yield lab
    except LabUnavailable as exc:
        if must_have_lab():
            pytest.fail(f"the vSphere lab is required in CI: {exc}")
        pytest.skip(f"vSphere lab unavailable: {exc}")


def test_a_worker_killed_while_copying_leaves_no_orphans(
    client, admin, estate, runtime, make_worker, settings, vc, image_policy, repository
):
    policy = image_policy()
    parent = start_backup(client, admin, policy["id"])
    assert make_worker("dispatcher").run_once() == parent
    (child,) = children(runtime, parent)
    vm = estate.vm(SERVER)

    proc = start_worker_process(settings, "doomed")
    try:

        def copying_the_second_disk():
            current = row(runtime, child)
            kinds = [x["kind"] for x in current.leftovers or []]
            return (
                current.worker_name == "doomed"
                and current.current_step == "copy"
                and kinds.count("repository_image") == 1
                and "vm_snapshot" in kinds
                # three blocks of the second disk read (at 16 MiB/s the first is stored)
                and current.bytes_done > CRASH_DISK_MIB * MIB + 2 * BLOCK_SIZE
            )

        wait_until(copying_the_second_disk, 90, "the worker copying the second disk")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()

    # What the dead worker left: its snapshot in vCenter, one image no restore point names.
    (orphan,) = bulwark_snapshots(vc, vm)
    assert orphan.name == f"bulwark-job-{child}"
    repo = open_repository_at(repository["path"])
    (stray,) = repo.list_manifests()
    assert restore_points(client, admin) == []
    # Meanwhile the guest rewrites the database disk: what the dead worker stored of it is
    # needed by no image any more.
    database_disk = next(d for d in flat_disks(estate.lab, SERVER) if d["key"] == 2016)
    with open(database_disk["local_path"], "r+b") as f:
        f.write(os.urandom(BLOCK_SIZE))

    survivor = make_worker("survivor")
    wait_until(lambda: survivor.run_once() == child, what="the takeover")
    done = job(client, admin, child)
    assert done["state"] == "succeeded", done["error"]
    assert done["worker_name"] == "survivor" and done["attempts"] == 2
    text = " ".join(events(done))
    assert f"removed image {stray}" in text
    assert f"removed snapshot bulwark-job-{child}" in text

    # No snapshot left at all (the policy keeps none on primary storage).
    assert bulwark_snapshots(vc, vm) == []
    (point,) = restore_points(client, admin)
    cataloged = {d["manifest"] for d in point["details"]["disks"]}
    assert set(repo.list_manifests()) == cataloged and stray not in cataloged

    # Garbage collection removes the dead attempt's blocks; every block left is needed.
    report = collect_garbage(repo, grace_s=0, images_only=True)
    assert report.removed_chunks >= 1
    needed = set().union(*(repo.load_manifest(m).digests() for m in cataloged))
    stored = {key.rsplit("/", 1)[-1] for key in repo.store.list("chunks/")}
    assert stored == needed
    for manifest_id in cataloged:
        assert repo.verify_image(repo.load_manifest(manifest_id)) == []


def test_cancelling_while_copying_stops_and_cleans_up(
    client, admin, estate, runtime, worker, vc, image_policy, repository
):
    policy = image_policy()
    parent = start_backup(client, admin, policy["id"])
    assert worker.run_once() == parent
    (child,) = children(runtime, parent)
    runner = threading.Thread(target=worker.run_once)
    runner.start()
    try:
        wait_until(
            lambda: (
                row(runtime, child).current_step == "copy" and row(runtime, child).bytes_done > 0
            ),
            90,
            "the copy to start",
        )
        r = client.post(f"/api/v1/jobs/{child}/cancel", headers=admin)
        assert r.status_code == 200, r.text
    finally:
        runner.join(timeout=120)
    done = job(client, admin, child)
    assert done["state"] == "cancelled", done["error"]
    assert done["bytes_done"] < done["bytes_total"]  # it stopped before the end
    assert bulwark_snapshots(vc, estate.vm(SERVER)) == []
    assert open_repository_at(repository["path"]).list_manifests() == []
    assert row(runtime, child).leftovers == []
    assert restore_points(client, admin) == []


def test_a_worker_killed_while_restoring_a_new_disk_leaves_no_partial_file(
    client, admin, estate, runtime, worker, make_worker, settings, image_policy, lab
):
    (backup,) = backup_now(client, admin, runtime, worker, image_policy()["id"])
    assert backup["state"] == "succeeded", backup["error"]
    (point,) = restore_points(client, admin)
    r = client.post(
        f"/api/v1/restore-points/{point['id']}/disks/2016/restore",
        json={"target": "new"},
        headers=admin,
    )
    assert r.status_code == 202, r.text
    restore = r.json()["id"]
    folder = lab.datastore_path("VMFS-SYS-01") / SERVER
    partial = folder / f"{SERVER}_1-restored-rp{point['id']}-job{restore}-flat.vmdk"

    proc = start_worker_process(settings, "doomed")
    try:
        wait_until(
            lambda: (
                row(runtime, restore).current_step == "restore"
                and row(runtime, restore).bytes_done > BLOCK_SIZE
                and partial.exists()
            ),
            90,
            "the restore writing the new disk",
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
    assert partial.stat().st_size < CRASH_DISK_MIB * MIB  # what the dead worker left

    survivor = make_worker("survivor")
    wait_until(lambda: survivor.run_once() == restore, what="the takeover")
    done = job(client, admin, restore)
    assert done["state"] == "succeeded", done["error"]
    assert f"removed [VMFS-SYS-01] {SERVER}/{partial.name} left by an interrupted restore" in (
        " ".join(events(done))
    )
    database_disk = next(d for d in flat_disks(lab, SERVER) if d["key"] == 2016)
    assert partial.read_bytes() == Path(database_disk["local_path"]).read_bytes()
    assert row(runtime, restore).leftovers == []


def test_a_worker_killed_while_restoring_a_whole_vm_leaves_no_half_made_vm(
    client, admin, estate, runtime, worker, make_worker, settings, image_policy, lab, vc
):
    from app.adapters.vsphere import vm_config

    (backup,) = backup_now(client, admin, runtime, worker, image_policy()["id"])
    assert backup["state"] == "succeeded", backup["error"]
    (point,) = restore_points(client, admin)
    config = point["details"]["vm_config"]
    name = f"{SERVER}-restored"
    r = client.post(
        f"/api/v1/restore-points/{point['id']}/whole-vm",
        json={"new_vm_name": name},
        headers=admin,
    )
    assert r.status_code == 202, r.text
    restore = r.json()["id"]
    home = lab.datastore_path("VMFS-SYS-01") / name

    proc = start_worker_process(settings, "doomed")
    try:
        wait_until(
            lambda: (
                row(runtime, restore).current_step == "restore"
                # into the second disk: the VM exists, one disk whole, one half written
                and row(runtime, restore).bytes_done > CRASH_DISK_MIB * MIB + BLOCK_SIZE
            ),
            90,
            "the restore writing the second disk",
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
    # What the dead worker left: a VM with the job's mark, recorded as the job's leftover.
    (item,) = row(runtime, restore).leftovers
    half = vm_config.vm_made_by(vc, config["folder"], name, f"job-{restore}")
    assert item["kind"] == "whole_vm_new" and half is not None
    assert (home / f"{name}_1-flat.vmdk").stat().st_size < CRASH_DISK_MIB * MIB

    survivor = make_worker("survivor")
    wait_until(lambda: survivor.run_once() == restore, what="the takeover")
    done = job(client, admin, restore)
    assert done["state"] == "succeeded", done["error"]
    assert f"removed {name} ({half}), a VM left half-made" in " ".join(events(done))
    assert not vm_config.vm_exists(vc, half)
    # Exactly one VM of that name, the survivor's, whole.
    made = done["result"]["details"]["vm"]
    assert made != half and vm_config.vm_made_by(vc, config["folder"], name, f"job-{restore}")
    for disk in flat_disks(lab, SERVER):
        n = {2000: "", 2016: "_1", 2032: "_2"}[disk["key"]]
        written = (home / f"{name}{n}-flat.vmdk").read_bytes()
        assert written == Path(disk["local_path"]).read_bytes(), disk["label"]
    assert row(runtime, restore).leftovers == []
