"""VM image backups against the lab: every disk of the snapshot copied into the repository;
later backups read only changed blocks where the VM tracks them, everything otherwise, and
store only new blocks; each restore point restored byte for byte."""

from __future__ import annotations

from pathlib import Path

from app.repository.manifest import BLOCK_SIZE
from tests.image.conftest import flat_disks, sha
from tests.protection.conftest import (
    backup_now,
    bulwark_snapshots,
    events,
    job,
    restore_points,
    run_jobs,
)

SERVER = "EXCH-MBX03"  # system disk on a VMDK, database and logs on virtual-mode RDMs


def change_blocks(disk: dict, blocks: list[int], marker: bytes) -> None:
    """Write into some 4 MiB blocks of a lab disk, as the guest would."""
    with open(disk["local_path"], "r+b") as f:
        for index in blocks:
            f.seek(index * BLOCK_SIZE + 4096)
            f.write(marker * 512)


def contents(lab, server: str) -> dict[int, bytes]:
    return {d["key"]: Path(d["local_path"]).read_bytes() for d in flat_disks(lab, server)}


def restore_as_new_disk(client, admin, worker, point: dict, key: int) -> dict:
    r = client.post(
        f"/api/v1/restore-points/{point['id']}/disks/{key}/restore",
        json={"target": "new"},
        headers=admin,
    )
    assert r.status_code == 202, r.text
    run_jobs(worker)
    return job(client, admin, r.json()["id"])


def restored_file(lab, point: dict, key: int, job_id: int) -> Path:
    disk = next(d for d in point["details"]["disks"] if d["key"] == key)
    datastore, path = disk["file"][1:].split("] ", 1)
    stem = path.removesuffix(".vmdk")
    return lab.datastore_path(datastore) / f"{stem}-restored-rp{point['id']}-job{job_id}-flat.vmdk"


def test_back_up_change_back_up_and_restore_each_point_byte_for_byte(
    client, admin, estate, runtime, worker, vc, image_policy, lab
):
    policy = image_policy()
    disks = {d["key"]: d for d in flat_disks(lab, SERVER)}
    assert {d["backing"] for d in disks.values()} == {"flat", "rdm-virtual"}
    before = contents(lab, SERVER)

    (first_job,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert first_job["state"] == "succeeded", first_job["error"]
    assert first_job["bytes_done"] == first_job["bytes_total"] == sum(map(len, before.values()))

    # The guest writes: one block of the system disk, two of the database disk.
    change_blocks(disks[2000], [1], b"S")
    change_blocks(disks[2016], [0, 3], b"D")
    after = contents(lab, SERVER)
    assert after[2000] != before[2000] and after[2016] != before[2016]
    assert after[2032] == before[2032]

    (second_job,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert second_job["state"] == "succeeded", second_job["error"]
    text = " ".join(events(job(client, admin, second_job["id"])))
    assert "changed-blocks read" in text  # the lab's vCenter tracks changed blocks

    points = sorted(restore_points(client, admin), key=lambda p: p["id"])
    assert [p["job_id"] for p in points] == [first_job["id"], second_job["id"]]
    for point in points:
        assert point["method"] == "vm_image"
        assert point["details"]["snapshot_removed"] is True
        assert {c["location"] for c in point["copies"]} == {"repository"}
        assert {d["key"] for d in point["details"]["disks"]} == set(disks)
        assert all(d["change_id"] for d in point["details"]["disks"])
    assert points[0]["details"]["read_mode"] == "full"
    assert points[1]["details"]["read_mode"] == "changed-blocks"
    # The second backup read and stored only the changed blocks; the rest are the first's.
    second = {d["key"]: d["stats"] for d in points[1]["details"]["disks"]}
    assert {k: v["read_bytes"] for k, v in second.items()} == {
        2000: BLOCK_SIZE,
        2016: 2 * BLOCK_SIZE,
        2032: 0,
    }
    assert {k: v["new_chunks"] for k, v in second.items()} == {2000: 1, 2016: 2, 2032: 0}
    # Snapshots were removed after the copy (the policy keeps none on primary storage).
    assert bulwark_snapshots(vc, estate.vm(SERVER)) == []

    for point, expected in ((points[0], before), (points[1], after)):
        for key, data in expected.items():
            done = restore_as_new_disk(client, admin, worker, point, key)
            assert done["state"] == "succeeded", done["error"]
            restored = restored_file(lab, point, key, done["id"])
            assert sha(restored.read_bytes()) == sha(data), (point["id"], key)
            assert (
                restored.with_name(restored.name.replace("-flat", ""))
                .read_text()
                .startswith("# Disk DescriptorFile")
            )


def test_without_changed_block_tracking_every_block_is_read_and_only_new_ones_stored(
    client, admin, estate, runtime, worker, vc, image_policy, lab
):
    server = "EXCH-MBX02"  # tracking off; database and logs on physical-mode RDMs
    policy = image_policy(server)
    (system,) = flat_disks(lab, server)
    before = Path(system["local_path"]).read_bytes()
    backup_now(client, admin, runtime, worker, policy["id"])
    change_blocks(system, [2], b"P")
    (second_job,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert second_job["state"] == "succeeded", second_job["error"]
    text = " ".join(events(job(client, admin, second_job["id"])))
    assert "full read (changed block tracking is off for this disk)" in text
    assert "not in a VMFS snapshot: not copied (protect physical-mode RDMs on the array)" in text

    first, latest = sorted(restore_points(client, admin), key=lambda p: p["id"])
    (disk,) = latest["details"]["disks"]  # the physical-mode RDMs are not in the image
    assert latest["details"]["read_mode"] == "full" and disk["key"] == 2000
    assert disk["stats"]["read_bytes"] == system["content_bytes"]
    assert disk["stats"]["new_chunks"] == 1
    done = restore_as_new_disk(client, admin, worker, first, 2000)
    assert done["state"] == "succeeded", done["error"]
    restored = restored_file(lab, first, 2000, done["id"])
    assert sha(restored.read_bytes()) == sha(before)
    done = restore_as_new_disk(client, admin, worker, latest, 2000)
    restored = restored_file(lab, latest, 2000, done["id"])
    assert sha(restored.read_bytes()) == sha(Path(system["local_path"]).read_bytes())


def test_a_lost_block_of_the_previous_image_is_read_again_by_the_next_backup(
    client, admin, estate, runtime, worker, image_policy, repository, lab
):
    from app.repository.backend import FilesystemStore
    from app.repository.chunks import chunk_key
    from app.repository.store import open_repository_at

    policy = image_policy()
    disks = {d["key"]: d for d in flat_disks(lab, SERVER)}
    backup_now(client, admin, runtime, worker, policy["id"])
    (first,) = restore_points(client, admin)
    manifest = next(d["manifest"] for d in first["details"]["disks"] if d["key"] == 2032)
    repo = open_repository_at(repository["path"])
    lost = repo.load_manifest(manifest).blocks[1]
    FilesystemStore(repository["path"]).delete(chunk_key(lost))  # the disk library lost it
    change_blocks(disks[2032], [3], b"L")

    (second_job,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert second_job["state"] == "succeeded", second_job["error"]
    latest = max(restore_points(client, admin), key=lambda p: p["id"])
    logs = next(d for d in latest["details"]["disks"] if d["key"] == 2032)
    # Only the lost block is read again from the snapshot, with the changed ones.
    assert logs["read_mode"] == "changed-blocks"
    assert repo.has_chunk(lost)  # stored again
    done = restore_as_new_disk(client, admin, worker, latest, 2032)
    assert done["state"] == "succeeded", done["error"]
    restored = restored_file(lab, latest, 2032, done["id"])
    assert sha(restored.read_bytes()) == sha(Path(disks[2032]["local_path"]).read_bytes())
