"""Array-snapshot protection for real: API → job engine → strategy → the lab vCenter (guest
operations, power) and a btrfs array → repository → catalog → restores.

The freeze and thaw commands run in the lab's stand-in guest (it stands in for a Windows guest
running Exchange and its VSS writer, which cannot exist here); its log says what ran and when.
"""

from __future__ import annotations

import random
import stat

import pytest

from app.adapters import vsphere
from app.db.models import RestorePoint
from app.repository import BLOCK_SIZE, open_repository_at
from tests.api.conftest import assert_problem
from tests.arrays.conftest import LUN_BYTES, ArraySetup, policy_body
from tests.protection.conftest import (
    children,
    events,
    guest_log,
    job,
    restore_points,
    run_jobs,
    start_backup,
    utc,
    wait_for_guest_log,
)

pytestmark = pytest.mark.lab


def make_policy(client, admin, estate, setup: ArraySetup, name: str, **fields) -> dict:
    r = client.post(
        "/api/v1/policies", json=policy_body(estate, setup, name, **fields), headers=admin
    )
    assert r.status_code == 201, r.text
    return r.json()


def backup(client, admin, runtime, worker, policy_id: int) -> dict:
    parent = start_backup(client, admin, policy_id)
    run_jobs(worker)
    (child,) = children(runtime, parent)
    return job(client, admin, child)


def details(runtime, point_id: int) -> dict:
    with runtime.db.session() as session:
        return dict(session.get(RestorePoint, point_id).details)


def volume_bytes(setup: ArraySetup, naa: str) -> bytes:
    with setup.array.open_volume(naa) as f:
        return f.read()


def snapshot_bytes(setup: ArraySetup, snapshot: str, naa: str) -> bytes:
    with setup.array.open_snapshot_volume(snapshot, naa) as f:
        return f.read()


def scribble(setup: ArraySetup, naa: str, count: int, seed: int, span: int = LUN_BYTES) -> None:
    """Overwrite ``count`` random 4 KiB blocks within the first ``span`` bytes."""
    rng = random.Random(seed)
    with setup.array.open_volume(naa, write=True) as f:
        for _ in range(count):
            f.seek(rng.randrange(0, span // 4096) * 4096)
            f.write(rng.randbytes(4096))


def repository(tmp_path):
    return open_repository_at(tmp_path / "repository")


def image_bytes(repo, manifest_id: str) -> bytes:
    return b"".join(repo.read_image(repo.load_manifest(manifest_id)))


# -- LUN matching -------------------------------------------------------------------------


def test_the_lab_vms_rdm_luns_are_matched_to_their_array_volumes(client, admin, array_estate):
    r = client.get("/api/v1/arrays/luns", headers=admin)
    assert r.status_code == 200, r.text
    luns = {(m["vm_name"], m["device_key"]): m for m in r.json()}
    for key, naa, role in (
        (2016, array_estate.db_naa, "database"),
        (2032, array_estate.log_naa, "logs"),
    ):
        m = luns[("EXCH-MBX02", key)]
        assert m["matched"] is True
        assert m["naa_id"] == naa
        assert m["array_name"] == "lab-array"
        assert m["consistency_group"] == array_estate.group
        assert m["server"] == "EXCH-MBX02" and m["databases"] == ["DB02"] and m["role"] == role
    # The other RDMs of the lab are on no array Bulwark knows: listed as unmatched.
    unmatched = client.get("/api/v1/arrays/luns?unmatched=true", headers=admin).json()
    names = {m["vm_name"] for m in unmatched}
    assert {"EXCH-MBX03", "EXCH-MBX05"} <= names and "EXCH-MBX02" not in names
    assert all(m["naa_id"].startswith("naa.6001405") for m in unmatched)


def test_array_test_and_volumes_through_the_api(client, admin, array_estate):
    cid = array_estate.connection_id
    r = client.post(f"/api/v1/connections/{cid}/test", headers=admin)
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
    assert "btrfs array at" in r.json()["message"]
    vols = client.get(f"/api/v1/arrays/{cid}/volumes", headers=admin).json()["volumes"]
    assert {v["naa_id"] for v in vols} == set(array_estate.naa_ids)
    caps = client.get(f"/api/v1/arrays/{cid}/capabilities", headers=admin).json()
    assert caps["changed_blocks"] is True and caps["consistency_groups"] is True
    bad = client.post(
        "/api/v1/connections",
        headers=admin,
        json={
            "name": "nowhere",
            "kind": "array",
            "options": {"driver": "btrfs", "path": "/nonexistent"},
        },
    ).json()
    r = client.post(f"/api/v1/connections/{bad['id']}/test", headers=admin)
    assert r.json()["ok"] is False and "does not exist" in r.json()["message"]
    assert_problem(
        client.post(f"/api/v1/arrays/{bad['id']}/volumes/sync", headers=admin),
        502,
        "does not exist",
    )
    assert_problem(client.get("/api/v1/arrays/999/volumes", headers=admin), 404)


# -- backup -------------------------------------------------------------------------------


def test_backup_freezes_snapshots_the_group_thaws_and_copies_off_host(
    client, admin, estate, runtime, array_estate, array_worker, tmp_path
):
    setup = array_estate
    policy = make_policy(client, admin, estate, setup, "DB02 array")
    done = backup(client, admin, runtime, array_worker, policy["id"])
    assert done["state"] == "succeeded", done["error"]
    assert done["required_capabilities"] == ["array"]

    (point,) = restore_points(client, admin, policy_id=policy["id"])
    assert point["consistency"] == "hot_application"
    assert "instant_recovery" in point["capabilities"]
    d = details(runtime, point["id"])
    snap_id = f"{setup.group}@bulwark-job-{done['id']}"
    assert d["array_snapshot"] == snap_id
    assert d["volumes"] == {"database": setup.db_naa, "logs": setup.log_naa}
    assert 0 < d["quiesce_window_s"] < 20
    locations = sorted(c["location"] for c in point["copies"])
    assert locations == ["array_snapshot", "repository", "repository"]

    # Freeze ended before the array snapshot; thaw started after it.
    vm = estate.vm("EXCH-MBX02")
    freeze, thaw = wait_for_guest_log(estate.lab, vm, 2)
    assert "freeze-exchange.cmd" in freeze["arguments"] and "thaw" in thaw["arguments"]
    taken = setup.array.snapshot(snap_id).created_at
    assert utc(freeze["ended"]) <= taken <= utc(thaw["started"])

    # The off-host copy is the snapshot, byte for byte.
    repo = repository(tmp_path)
    for naa, manifest_id in d["manifests"].items():
        assert image_bytes(repo, manifest_id) == snapshot_bytes(setup, snap_id, naa)
    assert set(d["copy_modes"].values()) == {"full"}


def test_thaw_runs_even_when_the_array_snapshot_fails(
    client, admin, estate, runtime, array_estate, array_worker
):
    setup = array_estate
    # The array refuses snapshots of this group (immutable snapshot folder).
    folder = setup.array.root / "snapshots" / setup.group
    folder.mkdir(parents=True)
    import subprocess

    subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        policy = make_policy(client, admin, estate, setup, "DB02 failing")
        done = backup(client, admin, runtime, array_worker, policy["id"])
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert done["state"] == "failed"
    assert "not allowed to snapshot consistency group" in done["error"]
    lines = wait_for_guest_log(estate.lab, estate.vm("EXCH-MBX02"), 2 * done["attempts"])
    # Every freeze is followed by its thaw, attempt after attempt.
    kinds = ["freeze" if "freeze" in x["arguments"] else "thaw" for x in lines]
    assert kinds == ["freeze", "thaw"] * done["attempts"]
    for freeze, thaw in zip(lines[::2], lines[1::2], strict=True):
        assert utc(freeze["ended"]) <= utc(thaw["started"])
    assert restore_points(client, admin, policy_id=policy["id"]) == []
    assert setup.array.list_snapshots() == []
    steps = [e["step"] for e in job(client, admin, done["id"])["events"]]
    assert steps.count("resume") >= done["attempts"]  # resume ran in every attempt


def test_retention_keeps_exactly_n_snapshots_on_the_array(
    client, admin, estate, runtime, array_estate, array_worker
):
    setup = array_estate
    policy = make_policy(
        client, admin, estate, setup, "keep 2", keep_on_primary=2, repository_id=None
    )
    jobs = [backup(client, admin, runtime, array_worker, policy["id"]) for _ in range(4)]
    assert [j["state"] for j in jobs] == ["succeeded"] * 4
    on_array = [s.name for s in setup.array.list_snapshots(setup.group)]
    assert on_array == [f"bulwark-job-{j['id']}" for j in jobs[-2:]]
    points = {p["job_id"]: p for p in restore_points(client, admin, policy_id=policy["id"])}
    assert [points[j["id"]]["status"] for j in jobs] == [
        "expired",
        "expired",
        "available",
        "available",
    ]


def test_changed_block_copy_equals_a_full_copy(
    client, admin, estate, runtime, array_estate, array_worker, tmp_path
):
    setup = array_estate
    policy = make_policy(client, admin, estate, setup, "DB02 incremental")
    first = backup(client, admin, runtime, array_worker, policy["id"])
    for naa, seed in ((setup.db_naa, 1), (setup.log_naa, 2)):
        scribble(setup, naa, 20, seed, span=BLOCK_SIZE)  # all in the first repository block
    second = backup(client, admin, runtime, array_worker, policy["id"])
    assert (first["state"], second["state"]) == ("succeeded", "succeeded")
    point = next(
        p
        for p in restore_points(client, admin, policy_id=policy["id"])
        if p["job_id"] == second["id"]
    )
    d = details(runtime, point["id"])
    assert set(d["copy_modes"].values()) == {"changed-blocks"}
    assert d["copy_read_bytes"] == 2 * BLOCK_SIZE  # one block of each volume, not all
    repo = repository(tmp_path)
    snap_id = d["array_snapshot"]
    for naa, manifest_id in d["manifests"].items():
        changed = repo.load_manifest(manifest_id)
        with setup.array.open_snapshot_volume(snap_id, naa) as f:
            full = repo.write_image(f, size=LUN_BYTES, source_info={"check": "full"})
        repo.abandon(full)
        assert changed.image_hash == full.image_hash
        assert changed.blocks == full.blocks
        assert image_bytes(repo, manifest_id) == snapshot_bytes(setup, snap_id, naa)


# -- restores -----------------------------------------------------------------------------


def restore(client, admin, point_id: int, **params) -> dict:
    return client.post(
        "/api/v1/jobs",
        json={"kind": "restore", "restore_point_id": point_id, "params": params},
        headers=admin,
    )


def test_instant_recovery_reverts_after_corruption_with_the_vm_off(
    client, admin, estate, runtime, array_estate, array_worker, vc
):
    setup = array_estate
    policy = make_policy(client, admin, estate, setup, "DB02 instant")
    done = backup(client, admin, runtime, array_worker, policy["id"])
    (point,) = restore_points(client, admin, policy_id=policy["id"])
    good = {naa: volume_bytes(setup, naa) for naa in setup.naa_ids}
    for naa in setup.naa_ids:
        with setup.array.open_volume(naa, write=True) as f:
            f.write(b"\xde\xad\xbe\xef" * 4096)  # corruption
    assert volume_bytes(setup, setup.db_naa) != good[setup.db_naa]

    assert_problem(restore(client, admin, point["id"]), 422, "confirm")
    assert_problem(
        restore(client, admin, point["id"], mode="bogus", confirm="EXCH-MBX02"),
        422,
        "does not apply",
    )
    r = restore(client, admin, point["id"], mode="revert", confirm="EXCH-MBX02")
    assert r.status_code == 202, r.text
    assert r.json()["required_capabilities"] == ["vcenter", "array"]
    run_jobs(array_worker)
    finished = job(client, admin, r.json()["id"])
    assert finished["state"] == "succeeded", finished["error"]
    for naa in setup.naa_ids:
        assert volume_bytes(setup, naa) == good[naa]
    log = events(finished)
    assert any("shutting EXCH-MBX02 down" in m for m in log)
    assert any("powering EXCH-MBX02 on again" in m for m in log)
    assert vsphere.power_state(vc, estate.vm("EXCH-MBX02")) == "poweredOn"
    assert done["state"] == "succeeded"


def test_clone_and_full_restore_from_the_repository_round_trip(
    client, admin, estate, runtime, array_estate, array_worker
):
    setup = array_estate
    policy = make_policy(client, admin, estate, setup, "DB02 clone")
    backup(client, admin, runtime, array_worker, policy["id"])
    (point,) = restore_points(client, admin, policy_id=policy["id"])
    snap_id = details(runtime, point["id"])["array_snapshot"]
    before = {naa: snapshot_bytes(setup, snap_id, naa) for naa in setup.naa_ids}
    scribble(setup, setup.db_naa, 50, 9)  # the live volume moves on; restores must not care

    r = restore(client, admin, point["id"], mode="clone")
    assert r.status_code == 202, r.text
    run_jobs(array_worker)
    cloned = job(client, admin, r.json()["id"])
    assert cloned["state"] == "succeeded", cloned["error"]
    r = restore(client, admin, point["id"], mode="volume", target="new")
    assert r.status_code == 202, r.text
    run_jobs(array_worker)
    restored = job(client, admin, r.json()["id"])
    assert restored["state"] == "succeeded", restored["error"]

    volumes = {v.naa_id: v for v in setup.array.list_volumes()}
    clones = [v for v in volumes.values() if v.clone_of == snap_id]
    assert {c.source_naa_id for c in clones} == set(setup.naa_ids)
    for c in clones:
        assert volume_bytes(setup, c.naa_id) == before[c.source_naa_id]
    new = [v for v in volumes.values() if v.group == f"restore-job-{restored['id']}"]
    assert len(new) == 2
    got = sorted(volume_bytes(setup, v.naa_id) for v in new)
    assert got == sorted(before.values())
    # The new volumes are known to Bulwark for presenting to a host.
    listed = client.get(f"/api/v1/arrays/{setup.connection_id}/volumes", headers=admin).json()
    assert {v.naa_id for v in new} <= {v["naa_id"] for v in listed["volumes"]}
    assert stat.S_ISREG(
        (setup.array.root / "groups" / f"restore-job-{restored['id']}" / new[0].naa_id)
        .stat()
        .st_mode
    )


def test_a_failed_off_host_copy_leaves_no_snapshot_behind(
    client, admin, estate, runtime, array_estate, array_worker, tmp_path
):
    setup = array_estate
    policy = make_policy(client, admin, estate, setup, "DB02 broken repository")
    # The repository disappears between the policy and the run: the copy step fails.
    import shutil

    shutil.rmtree(tmp_path / "repository")
    done = backup(client, admin, runtime, array_worker, policy["id"])
    assert done["state"] == "failed"
    assert "repository" in done["error"]
    assert restore_points(client, admin, policy_id=policy["id"]) == []
    # Each attempt's snapshot was its leftover, removed by cleanup; thaw ran every time.
    assert setup.array.list_snapshots() == []
    assert job(client, admin, done["id"])["attempts"] == done["attempts"] >= 1
    assert any("removed array snapshot" in m for m in events(job(client, admin, done["id"])))
    lines = wait_for_guest_log(estate.lab, estate.vm("EXCH-MBX02"), 2 * done["attempts"])
    assert sum("thaw" in x["arguments"] for x in lines) == done["attempts"]


def test_a_proxy_killed_after_the_snapshot_is_taken_over_and_cleaned_up(
    client, admin, estate, runtime, array_estate, array_worker, settings
):
    """SIGKILL while the thaw command runs: the array snapshot exists but is not cataloged.
    The worker that takes the job over thaws the guest (owed), removes the dead attempt's
    snapshot, and takes its own."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from app.db.models import Job
    from tests.conftest import ROOT

    setup = array_estate
    policy = make_policy(
        client, admin, estate, setup, "DB02 killed", post_script="thaw-exchange.cmd DB02 & sleep 5"
    )
    parent = start_backup(client, admin, policy["id"])
    assert array_worker.run_once() == parent  # queues the per-target job
    (child,) = children(runtime, parent)
    env = {
        **os.environ,
        "BULWARK_DATABASE_URL": settings.database_url,
        "BULWARK_SECRET_KEY": settings.secret_key.get_secret_value(),
        "BULWARK_DATA_DIR": str(settings.data_dir),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.arrays.array_worker", "doomed"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with runtime.db.session() as session:
                row = session.get(Job, child)
                kinds = {x["kind"] for x in row.leftovers or []}
                if row.current_step == "resume" and "array_snapshot" in kinds:
                    break
            assert time.monotonic() < deadline, "the doomed worker never reached resume"
            time.sleep(0.05)
        time.sleep(0.3)  # the thaw command is running in the guest now
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    orphan = f"{setup.group}@bulwark-job-{child}"
    assert [s.id for s in setup.array.list_snapshots()] == [orphan]

    survivor_deadline = time.monotonic() + 30
    while array_worker.run_once() != child:
        assert time.monotonic() < survivor_deadline, "the job was not taken over"
        time.sleep(0.1)
    done = job(client, admin, child)
    assert done["state"] == "succeeded", done["error"]
    assert done["attempts"] == 2
    text = " ".join(events(done))
    assert f"removed array snapshot {orphan}" in text
    assert "ran the post-snapshot script an interrupted run owed" in text
    # The retry's snapshot (same job, same name) is the one kept, and it is cataloged.
    (point,) = restore_points(client, admin, policy_id=policy["id"])
    assert [s.id for s in setup.array.list_snapshots()] == [
        details(runtime, point["id"])["array_snapshot"]
    ]
    with runtime.db.session() as session:
        assert session.get(Job, child).leftovers == []


def test_a_point_whose_array_snapshot_expired_restores_from_the_repository_only(
    client, admin, estate, runtime, array_estate, array_worker
):
    setup = array_estate
    policy = make_policy(client, admin, estate, setup, "DB02 keep 1", keep_on_primary=1)
    first = backup(client, admin, runtime, array_worker, policy["id"])
    backup(client, admin, runtime, array_worker, policy["id"])
    old = next(
        p
        for p in restore_points(client, admin, policy_id=policy["id"])
        if p["job_id"] == first["id"]
    )
    assert old["status"] == "available"
    assert "instant_recovery" not in old["capabilities"]
    assert "whole_database" in old["capabilities"]
    live = sorted(c["location"] for c in old["copies"] if c["removed_at"] is None)
    assert live == ["repository", "repository"]
    assert_problem(
        restore(client, admin, old["id"], mode="revert", confirm="EXCH-MBX02"),
        422,
        "no array snapshot left",
    )
    r = restore(client, admin, old["id"], mode="volume")
    assert r.status_code == 202, r.text


def test_without_a_freeze_command_the_point_records_crash_consistency(
    client, admin, estate, runtime, array_estate, array_worker
):
    setup = array_estate
    policy = make_policy(
        client, admin, estate, setup, "DB02 unfrozen", pre_script=None, post_script=None
    )
    done = backup(client, admin, runtime, array_worker, policy["id"])
    assert done["state"] == "succeeded", done["error"]
    (point,) = restore_points(client, admin, policy_id=policy["id"])
    assert point["consistency"] == "crash"  # what was reached, not what was asked
    assert details(runtime, point["id"])["asked_consistency"] == "hot_application"
    assert any("asked for hot_application but reached crash" in m for m in events(done))
    assert guest_log(estate.lab, estate.vm("EXCH-MBX02")) == []  # nothing ran in the guest


def test_full_restore_from_the_repository_over_the_original_volumes(
    client, admin, estate, runtime, array_estate, array_worker, vc
):
    setup = array_estate
    policy = make_policy(client, admin, estate, setup, "DB02 full back")
    backup(client, admin, runtime, array_worker, policy["id"])
    (point,) = restore_points(client, admin, policy_id=policy["id"])
    snap_id = details(runtime, point["id"])["array_snapshot"]
    want = {naa: snapshot_bytes(setup, snap_id, naa) for naa in setup.naa_ids}
    setup.array.delete_snapshot(snap_id)  # the array lost it: only the repository is left
    for naa in setup.naa_ids:
        scribble(setup, naa, 30, 5)
    assert_problem(
        restore(client, admin, point["id"], mode="volume", target="original"), 422, "confirm"
    )
    r = restore(client, admin, point["id"], mode="volume", target="original", confirm="EXCH-MBX02")
    assert r.status_code == 202, r.text
    run_jobs(array_worker)
    done = job(client, admin, r.json()["id"])
    assert done["state"] == "succeeded", done["error"]
    for naa in setup.naa_ids:
        assert volume_bytes(setup, naa) == want[naa]
    assert vsphere.power_state(vc, estate.vm("EXCH-MBX02")) == "poweredOn"
    assert any("shutting EXCH-MBX02 down" in m for m in events(done))
