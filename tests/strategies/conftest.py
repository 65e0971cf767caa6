"""Strategies driven on their own: a fake job context and fake services around the real
peers (the lab vCenter and its stand-in guest, a repository on disk, a btrfs array).

The fakes stand in for the job engine and the catalog, which a strategy only reaches through
``StepContext`` and ``StrategyServices``; what they record is what the tests assert on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.adapters import vsphere
from app.domain.protection import Consistency, CopyLocation, DatabaseLayout
from app.repository import open_repository_at
from app.strategies.base import BackupRun, PointView, PolicySpec, PrimaryCopy, TargetSpec
from tests.lab_fixture import LabUnavailable, must_have_lab, running_lab

VCENTER = 1  # the one vCenter connection id the fakes know


class FakeContext:
    """A job context without a job: steps, events and leftovers in lists."""

    def __init__(self, job_id: int = 7001, attempt: int = 1) -> None:
        self.job_id, self.attempt = job_id, attempt
        self.steps: list[str] = []
        self.events: list[tuple[str, Any, str | None]] = []
        self.leftovers: list[dict[str, Any]] = []
        self.progressed: list[dict[str, Any]] = []

    def step(self, name: str, message: str | None = None) -> None:
        self.steps.append(name)
        if message:
            self.events.append((message, "info", name))

    def event(self, message: str, level: Any = "info", step: str | None = None) -> None:
        self.events.append((message, level, step))

    def warning(self, message: str) -> None:
        self.events.append((message, "warning", None))

    def check_cancelled(self) -> None:
        pass

    def progress(self, percent=None, *, bytes_done=None, bytes_total=None) -> None:
        self.progressed.append({"percent": percent, "done": bytes_done, "total": bytes_total})

    def add_leftover(self, item: dict[str, Any]) -> None:
        if item not in self.leftovers:
            self.leftovers.append(dict(item))

    def remove_leftover(self, item: dict[str, Any]) -> None:
        self.leftovers = [x for x in self.leftovers if x != item]

    def messages(self) -> str:
        return " | ".join(m for m, _, _ in self.events)

    def warnings(self) -> list[str]:
        return [m for m, level, _ in self.events if str(level).endswith("warning")]


class LabAccess:
    """vCenter sessions and guest operations against the lab (what JobVCenterAccess gives)."""

    def __init__(self, lab) -> None:
        self._lab = lab
        self._client: Any = None

    def client(self, connection_id: int) -> Any:
        assert connection_id == VCENTER
        if self._client is None:
            lab = self._lab
            self._client = vsphere.connect(
                lab.host, lab.port, lab.username, lab.password, trusted_thumbprint=lab.thumbprint
            )
        return self._client

    def guest(self, connection_id: int) -> vsphere.GuestOperations:
        estate = self._lab.estate
        return vsphere.GuestOperations(estate["guest_username"], estate["guest_password"])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


@dataclass
class FakeServices:
    """The catalog as a list of earlier points, repositories on disk, arrays by id."""

    vcenter: Any
    points: list[tuple[Any, PointView]] = field(default_factory=list)  # (method, point)
    named: set[tuple[CopyLocation, str]] = field(default_factory=set)
    repositories: dict[int, Path] = field(default_factory=dict)
    arrays: dict[int, Any] = field(default_factory=dict)
    volumes: Any = None
    retained: list[dict[str, Any]] = field(default_factory=list)
    on_primary: list[PrimaryCopy] = field(default_factory=list)  # what retention offers

    def recent_points(self, target, method, *, policy_id=None, whole_server=False, limit=5):
        return [p for m, p in self.points if m == method][:limit]

    def cataloged(self, location, reference, connection_id=None) -> bool:
        return (location, reference) in self.named

    def retain_on_primary(
        self, policy_id, target, location, keep, remove: Callable[[PrimaryCopy], bool]
    ) -> list[int]:
        self.retained.append({"policy": policy_id, "location": location, "keep": keep})
        return [c.point_id for c in self.on_primary if remove(c)]

    def open_repository(self, repository_id: int) -> Any:
        return open_repository_at(self.repositories[repository_id])

    def open_array(self, connection_id: int) -> Any:
        return self.arrays[connection_id]

    def database_volumes(self, target):
        return self.volumes


def policy(consistency: Consistency, **over: Any) -> PolicySpec:
    fields: dict[str, Any] = {
        "id": 1,
        "name": "test policy",
        "consistency": consistency,
        "pre_script": None,
        "post_script": None,
        "script_timeout_s": 30,
        "keep_on_primary": 1,
        "repository_id": None,
        **over,
    }
    return PolicySpec(**fields)


def target(lab, server: str, layout: DatabaseLayout | None, database_id: int | None = None):
    vm = lab.exchange_vm(server)["moref"]
    return TargetSpec(1, server, VCENTER, vm, database_id, "DB" if database_id else None, layout)


def backup_run(ctx: FakeContext, policy_spec: PolicySpec, target_spec: TargetSpec) -> BackupRun:
    return BackupRun(ctx=ctx, job_id=ctx.job_id, policy=policy_spec, target=target_spec)


@pytest.fixture
def lab() -> Iterator[Any]:
    """A fresh lab for one test (it starts in well under a second)."""
    try:
        with running_lab() as running:
            yield running
    except LabUnavailable as exc:
        if must_have_lab():
            pytest.fail(f"the vSphere lab is required in CI: {exc}")
        pytest.skip(f"vSphere lab unavailable (run 'make test' to build it): {exc}")


@pytest.fixture
def access(lab) -> Iterator[LabAccess]:
    made = LabAccess(lab)
    yield made
    made.close()


@pytest.fixture
def services(access) -> FakeServices:
    return FakeServices(vcenter=access)


@pytest.fixture
def repository(tmp_path, services) -> int:
    path = tmp_path / "repository"
    open_repository_at(path, create=True, encrypted=False)
    services.repositories[31] = path
    return 31
