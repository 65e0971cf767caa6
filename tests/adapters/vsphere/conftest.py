"""Fixtures for the vSphere adapter tests: a lab per test module, and a client logged in to it.

A lab that cannot be built or started skips these tests on a developer's machine and fails
them in CI (CI=true), where the lab is part of what is tested.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.adapters.vsphere import VSphereClient, connect
from tests.lab_fixture import Lab, LabUnavailable, must_have_lab, running_lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    starting = running_lab()
    try:
        started = starting.__enter__()
    except LabUnavailable as exc:
        if must_have_lab():
            pytest.fail(f"the vSphere lab is required in CI and did not start: {exc}")
        pytest.skip(f"vSphere lab unavailable: {exc}")
    try:
        yield started
    finally:
        starting.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client(lab: Lab) -> Iterator[VSphereClient]:
    with connect(
        lab.host, lab.port, lab.username, lab.password, trusted_thumbprint=lab.thumbprint
    ) as session:
        yield session
