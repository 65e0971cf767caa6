"""A btrfs array per test: one loop-mounted btrfs per session, a fresh array path per test."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.adapters.arrays import BtrfsArray
from tests.btrfs_fixture import BtrfsUnavailable, btrfs_mount, must_have_btrfs


@pytest.fixture(scope="session")
def btrfs_root() -> Iterator[Path]:
    try:
        with btrfs_mount("3G") as mount:
            yield mount
    except BtrfsUnavailable as exc:
        if must_have_btrfs():
            pytest.fail(f"a btrfs array is required in CI: {exc}")
        pytest.skip(f"btrfs on a loop device unavailable: {exc}")


@pytest.fixture
def array_path(btrfs_root: Path) -> Path:
    path = btrfs_root / f"array-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


@pytest.fixture
def array(array_path: Path) -> BtrfsArray:
    return BtrfsArray(array_path, "test-array")


# -- the whole path: lab vCenter, btrfs array, repository, job engine ----------------------

from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from app.jobs import Worker  # noqa: E402
from app.repository import open_repository_at  # noqa: E402
from tests.protection.conftest import (  # noqa: E402, F401 - fixtures used here
    FAST,
    estate,
    registry,
    runtime,
    vc,
)
from tests.protection.conftest import lab as lab  # noqa: E402, F401 - a fresh lab per test

LUN_BYTES = 16 * 1024 * 1024  # the lab's LUNs are 1 TiB; the array volumes need not be


@dataclass
class ArraySetup:
    """The lab's EXCH-MBX02 (DB02 on physical-mode RDMs) with its LUNs on a btrfs array."""

    connection_id: int
    array: BtrfsArray
    group: str
    db_naa: str
    log_naa: str
    repository_id: int | None

    @property
    def naa_ids(self) -> list[str]:
        return [self.db_naa, self.log_naa]


def lun_naa(lab, vm: str, key: int) -> str:
    disk = next(d for d in lab.exchange_vm(vm)["disks"] if d["key"] == key)
    return disk["canonical_name"]


@pytest.fixture
def array_estate(client, admin, estate, array, tmp_path) -> ArraySetup:  # noqa: F811
    lab = estate.lab
    db_naa, log_naa = lun_naa(lab, "EXCH-MBX02", 2016), lun_naa(lab, "EXCH-MBX02", 2032)
    group = "EXCH-MBX02-DB02"
    # What the array's administrator did: a consistency group with the database and log LUNs.
    for naa in (db_naa, log_naa):
        array.create_volume(group, naa, LUN_BYTES)
        with array.open_volume(naa, write=True) as f:
            f.write(random.randbytes(LUN_BYTES // 2))
    r = client.post(
        "/api/v1/connections",
        json={
            "name": "lab-array",
            "kind": "array",
            "options": {"driver": "btrfs", "path": str(array.root)},
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    conn_id = r.json()["id"]
    r = client.post(f"/api/v1/arrays/{conn_id}/volumes/sync", headers=admin)
    assert r.status_code == 200, r.text
    repo_path = tmp_path / "repository"
    open_repository_at(repo_path, create=True, encrypted=False)
    r = client.post(
        "/api/v1/connections",
        json={"name": "repo", "kind": "repository", "options": {"path": str(repo_path)}},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    return ArraySetup(conn_id, array, group, db_naa, log_naa, r.json()["id"])


@pytest.fixture
def array_worker(runtime, registry) -> Worker:  # noqa: F811
    """A proxy that reaches both the vCenter and the array."""
    return Worker(runtime, "array-proxy", ["vcenter", "array"], registry=registry, **FAST)


def policy_body(estate, setup: ArraySetup, name: str, **fields: Any) -> dict[str, Any]:  # noqa: F811
    return {
        "name": name,
        "method": "array_snapshot",
        "consistency": "hot_application",
        "rpo_minutes": 60,
        "pre_script": "freeze-exchange.cmd DB02 & sleep 0.2",
        "post_script": "thaw-exchange.cmd DB02",
        "keep_on_primary": 3,
        "repository_id": setup.repository_id,
        "targets": [
            {
                "server_id": estate.server("EXCH-MBX02")["id"],
                "database_id": estate.database("EXCH-MBX02", "DB02")["id"],
            }
        ],
        **fields,
    }
