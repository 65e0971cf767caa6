"""Restores from VM images: download with HTTP Range, refusal of damaged blocks, restore over
the original disk (powered off, confirmed, audited)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.adapters import vsphere
from app.repository.backend import FilesystemStore
from app.repository.chunks import chunk_key
from app.repository.manifest import BLOCK_SIZE
from tests.api.conftest import assert_problem
from tests.image.conftest import flat_disks, sha
from tests.protection.conftest import backup_now, job, restore_points, run_jobs

SERVER = "EXCH-MBX03"
DB_DISK = 2016  # DB03 on a virtual-mode RDM


@pytest.fixture
def point(client, admin, runtime, worker, image_policy) -> dict:
    (done,) = backup_now(client, admin, runtime, worker, image_policy()["id"])
    assert done["state"] == "succeeded", done["error"]
    (only,) = restore_points(client, admin)
    return only


def image_url(point: dict, key: int) -> str:
    return f"/api/v1/restore-points/{point['id']}/disks/{key}/image"


def damage_block(repository: dict, point: dict, key: int, index: int) -> str:
    """Flip bytes inside one stored block of the image, as a failing disk would."""
    manifest_id = next(d["manifest"] for d in point["details"]["disks"] if d["key"] == key)
    from app.repository.store import open_repository_at

    repo = open_repository_at(repository["path"])
    digest = repo.load_manifest(manifest_id).blocks[index]
    assert digest is not None
    stored = Path(FilesystemStore(repository["path"])._path(chunk_key(digest)))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    return digest


def pins(repository: dict) -> dict:
    from app.repository.store import open_repository_at

    return open_repository_at(repository["path"]).pinned_manifests()


def test_download_whole_and_by_range(client, admin, lab, repository, point):
    expected = Path(next(d for d in flat_disks(lab, SERVER) if d["key"] == DB_DISK)["local_path"])
    data = expected.read_bytes()
    whole = client.get(image_url(point, DB_DISK), headers=admin)
    assert whole.status_code == 200
    assert whole.headers["accept-ranges"] == "bytes"
    assert int(whole.headers["content-length"]) == len(data)
    assert sha(whole.content) == sha(data)
    etag = whole.headers["etag"]

    # A resumed download: a range across a block boundary, an open-ended tail, a suffix.
    start, end = BLOCK_SIZE - 100, BLOCK_SIZE + 99
    part = client.get(image_url(point, DB_DISK), headers={**admin, "Range": f"bytes={start}-{end}"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
    assert part.content == data[start : end + 1]
    tail = client.get(
        image_url(point, DB_DISK), headers={**admin, "Range": "bytes=12345678-", "If-Range": etag}
    )
    assert tail.status_code == 206 and tail.content == data[12345678:]
    suffix = client.get(image_url(point, DB_DISK), headers={**admin, "Range": "bytes=-10"})
    assert suffix.status_code == 206 and suffix.content == data[-10:]
    # The image changed since (another ETag): the whole image, not a mismatched piece.
    stale = client.get(
        image_url(point, DB_DISK), headers={**admin, "Range": "bytes=0-9", "If-Range": '"x"'}
    )
    assert stale.status_code == 200 and len(stale.content) == len(data)

    outside = client.get(image_url(point, DB_DISK), headers={**admin, "Range": "bytes=999999999-"})
    assert_problem(outside, 416)
    assert outside.headers["content-range"] == f"bytes */{len(data)}"
    assert_problem(client.get(image_url(point, 2999), headers=admin), 409, "holds no image")
    assert pins(repository) == {}  # each download pinned its image only while it ran


def test_download_needs_the_restore_permission(client, headers_for, point):
    from app.security.roles import Role

    r = client.get(image_url(point, DB_DISK), headers=headers_for(Role.AUDITOR))
    assert_problem(r, 403)
    assert client.get(image_url(point, DB_DISK)).status_code == 401


def test_a_damaged_block_is_refused_by_restore_and_download(
    client, admin, worker, lab, repository, point
):
    damage_block(repository, point, DB_DISK, 2)
    r = client.post(
        f"/api/v1/restore-points/{point['id']}/disks/{DB_DISK}/restore",
        json={"target": "new"},
        headers=admin,
    )
    assert r.status_code == 202, r.text
    run_jobs(worker)
    done = job(client, admin, r.json()["id"])
    assert done["state"] == "failed"
    assert f"restore point {point['id']}" in done["error"] and "block 2 is damaged" in done["error"]
    assert done["attempts"] == 1  # refused for good, not retried
    # The partial new disk was removed; nothing else was touched.
    folder = lab.datastore_path("VMFS-SYS-01") / SERVER
    assert not [p.name for p in folder.iterdir() if "restored" in p.name]

    # A download from the damaged block on is refused before any byte is sent.
    ranged = client.get(
        image_url(point, DB_DISK), headers={**admin, "Range": f"bytes={2 * BLOCK_SIZE}-"}
    )
    assert_problem(ranged, 409, "block 2 is damaged")
    assert pins(repository) == {}


def test_restore_over_the_original_needs_power_off_and_confirmation(
    client, admin, worker, lab, estate, vc, runtime, point
):
    disk = next(d for d in flat_disks(lab, SERVER) if d["key"] == DB_DISK)
    good = Path(disk["local_path"]).read_bytes()
    url = f"/api/v1/restore-points/{point['id']}/disks/{DB_DISK}/restore"

    # Without the server's name: refused before any job exists.
    r = client.post(url, json={"target": "original", "confirm": "yes"}, headers=admin)
    assert_problem(r, 422, "confirm by setting confirm to the server's name")

    # The database disk is lost in the guest...
    with open(disk["local_path"], "r+b") as f:
        f.write(b"\0" * BLOCK_SIZE)

    # ... and the VM still runs: the job refuses to overwrite a disk in use.
    r = client.post(url, json={"target": "original", "confirm": SERVER}, headers=admin)
    assert r.status_code == 202, r.text
    run_jobs(worker)
    refused = job(client, admin, r.json()["id"])
    assert refused["state"] == "failed" and "power it off" in refused["error"]

    vsphere.shut_down(vc, estate.vm(SERVER), timeout=30)
    r = client.post(url, json={"target": "original", "confirm": SERVER}, headers=admin)
    run_jobs(worker)
    done = job(client, admin, r.json()["id"])
    assert done["state"] == "succeeded", done["error"]
    assert sha(Path(disk["local_path"]).read_bytes()) == sha(good)

    audit = client.get("/api/v1/audit-events?action=restore.disk", headers=admin).json()["items"]
    assert [(a["object_id"], a["detail"]["target"]) for a in audit] == [
        (str(point["id"]), "original")
    ]


def test_restore_over_the_original_refuses_a_disk_grown_since_the_backup(
    client, admin, worker, estate, vc, point
):
    from pyVmomi import vim

    vm = vc.managed_object(vim.VirtualMachine, estate.vm(SERVER))
    disk = next(
        d
        for d in vm.config.hardware.device
        if isinstance(d, vim.vm.device.VirtualDisk) and d.key == DB_DISK
    )
    disk.capacityInBytes += 1024**3
    disk.capacityInKB = disk.capacityInBytes // 1024
    grow = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
    vsphere.wait_for_task(vc, vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[grow])), 30)
    vsphere.shut_down(vc, estate.vm(SERVER), timeout=30)

    url = f"/api/v1/restore-points/{point['id']}/disks/{DB_DISK}/restore"
    r = client.post(url, json={"target": "original", "confirm": SERVER}, headers=admin)
    assert r.status_code == 202, r.text
    run_jobs(worker)
    refused = job(client, admin, r.json()["id"])
    assert refused["state"] == "failed", refused
    assert "when backed up; restore it as a new disk" in refused["error"]


def test_every_disk_restored_over_the_original_brings_the_whole_vm_back(
    client, admin, worker, lab, estate, vc, point
):
    disks = flat_disks(lab, SERVER)
    good = {d["key"]: sha(Path(d["local_path"]).read_bytes()) for d in disks}
    for d in disks:  # the guest ruins every disk
        with open(d["local_path"], "r+b") as f:
            f.seek(BLOCK_SIZE)
            f.write(b"ruined" * 1000)
    vsphere.shut_down(vc, estate.vm(SERVER), timeout=30)

    r = client.post(
        f"/api/v1/restore-points/{point['id']}/disks/restore",
        json={"target": "original", "confirm": SERVER},
        headers=admin,
    )
    assert r.status_code == 202, r.text
    run_jobs(worker)
    done = job(client, admin, r.json()["id"])
    assert done["state"] == "succeeded", done["error"]
    assert done["bytes_done"] == done["bytes_total"] == sum(d["content_bytes"] for d in disks)
    assert {d["key"]: sha(Path(d["local_path"]).read_bytes()) for d in disks} == good
