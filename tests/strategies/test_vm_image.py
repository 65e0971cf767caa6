"""The VM image strategy driven on its own: the snapshot's disks go into a repository on
disk through the services it is handed; the next image reads only what changed since the
earlier point the catalog names; cleanup removes only images the catalog does not name."""

from __future__ import annotations

import pytest

from app.adapters import vsphere
from app.domain.protection import Consistency as C
from app.domain.protection import CopyLocation, ProtectionMethod
from app.repository import open_repository_at
from app.strategies.base import PointView
from app.strategies.vm_image import CHANGED, FULL, VmImage
from tests.strategies.conftest import FakeContext, backup_run, policy, target

pytestmark = pytest.mark.lab


def image_run(lab, services, repository, job_id: int):
    ctx = FakeContext(job_id=job_id)
    spec = policy(C.CRASH, keep_on_primary=0, repository_id=repository)
    run = backup_run(ctx, spec, target(lab, "EXCH-MBX01", None))
    VmImage(services).run(run)
    return ctx, run


def test_an_image_then_one_of_the_changed_blocks_only(lab, services, repository):
    ctx, first = image_run(lab, services, repository, 8001)
    images = [c for c in first.copies if c.location == CopyLocation.REPOSITORY]
    assert images and len(images) == len(first.details["disks"])
    assert {d["read_mode"] for d in first.details["disks"]} == {FULL}
    # keep_on_primary 0: the snapshot went as soon as the image was in the repository.
    assert first.details["snapshot_removed"] is True
    assert [c.location for c in first.copies] == [CopyLocation.REPOSITORY] * len(images)
    assert vsphere.list_snapshots(services.vcenter.client(1), first.target.vm_moref) == []
    repo = open_repository_at(services.repositories[repository])
    for c in images:
        assert repo.load_manifest(c.reference).size == c.size_bytes

    # The catalog names the first image: the next one builds on it.
    services.points = [
        (ProtectionMethod.VM_IMAGE, PointView(1, dict(first.details), tuple(first.copies)))
    ]
    _, second = image_run(lab, services, repository, 8002)
    modes = {d["label"]: d["read_mode"] for d in second.details["disks"]}
    assert CHANGED in modes.values(), modes


def test_cleanup_removes_an_uncataloged_image_and_keeps_a_cataloged_one(lab, services, repository):
    _, run = image_run(lab, services, repository, 8003)
    refs = [c.reference for c in run.copies]
    assert len(refs) >= 2  # the system disk and the database's
    kept, dropped = refs[0], refs[1]
    services.named = {(CopyLocation.REPOSITORY, kept)}
    later = FakeContext(job_id=8003, attempt=2)
    later.leftovers = [
        {"kind": "repository_image", "repository_id": repository, "manifest_id": m}
        for m in (kept, dropped)
    ]
    VmImage(services).cleanup(later, list(later.leftovers))
    assert later.leftovers == []
    names = open_repository_at(services.repositories[repository]).list_manifests()
    assert kept in names and dropped not in names
