"""Fixtures for VM image backups: the lab with larger disks, a repository, a VM-image policy.

Backups and restores run for real: API, job engine, the lab's SOAP API and ``/folder``
transfer, and a repository on the local file system.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.repository.store import open_repository_at
from tests.lab_fixture import Lab, LabUnavailable, must_have_lab, running_lab
from tests.protection.conftest import (  # noqa: F401 - fixtures shared with the snapshot tests
    estate,
    make_policy,
    make_worker,
    registry,
    runtime,
    vc,
    worker,
)

DISK_MIB = 16  # four 4 MiB repository blocks per lab disk


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh lab for one test, with 16 MiB of content per Exchange disk."""
    try:
        with running_lab(extra_args=["--disk-mib", str(DISK_MIB)]) as running:
            yield running
    except LabUnavailable as exc:
        if must_have_lab():
            pytest.fail(f"the vSphere lab is required in CI: {exc}")
        pytest.skip(f"vSphere lab unavailable (run 'make test' to build it): {exc}")


@pytest.fixture
def repository(client, admin, settings, tmp_path: Path) -> dict[str, Any]:
    """A repository connection on a fresh folder (initialised, unencrypted)."""
    path = tmp_path / "repository"
    open_repository_at(path, key=settings.root_key(), create=True, encrypted=False)
    body = {"name": "disk-library", "kind": "repository", "options": {"path": str(path)}}
    r = client.post("/api/v1/connections", json=body, headers=admin)
    assert r.status_code == 201, r.text
    return {**r.json(), "path": path}


@pytest.fixture
def image_policy(client, admin, estate, repository):  # noqa: F811 - the shared fixture
    def _make(server: str = "EXCH-MBX03", name: str = "image", **fields: Any) -> dict:
        return make_policy(
            client,
            admin,
            name,
            [{"server_id": estate.server(server)["id"]}],
            method="vm_image",
            consistency="hot_application",
            repository_id=repository["id"],
            keep_on_primary=0,
            **fields,
        )

    return _make


def flat_disks(lab: Lab, server: str) -> list[dict[str, Any]]:
    """The disks of a lab VM that hold content on this machine (flat and virtual RDM)."""
    return [d for d in lab.exchange_vm(server)["disks"] if d.get("local_path")]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
