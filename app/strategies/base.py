"""The strategy interface: a protection method as explicit steps with cleanup that always runs.

A backup runs ``quiesce → snapshot → resume → copy``; the job handler then writes the catalog
and applies retention, the same for every method. ``resume`` runs whenever ``quiesce`` started,
whatever happened after. Everything a step creates outside Bulwark is recorded as a leftover
through the job context first, so a failed attempt, or a worker that died, is cleaned up by
``cleanup`` (also run by whoever takes a dead worker's job over).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from app.domain.declarations import Declaration
from app.domain.jobs import EventLevel
from app.domain.protection import Consistency, CopyLocation, DatabaseLayout


class StepContext(Protocol):
    """What a strategy may do with its job (app.jobs.context.JobContext provides it)."""

    def step(self, name: str, message: str | None = None) -> None: ...
    def event(self, message: str, level: Any = ..., step: str | None = None) -> None: ...
    def warning(self, message: str) -> None: ...
    def check_cancelled(self) -> None: ...
    def add_leftover(self, item: dict[str, Any]) -> None: ...
    def remove_leftover(self, item: dict[str, Any]) -> None: ...


class GuestRunner(Protocol):
    """Runs a command in a guest through VMware Tools and waits for its exit code."""

    def run(
        self,
        client: Any,
        vm_moref: str,
        command: str,
        *,
        timeout_s: float,
        on_started: Callable[[int], None] | None = None,
    ) -> Any: ...

    def wait(self, client: Any, vm_moref: str, pid: int, *, timeout_s: float) -> Any: ...


class VCenterAccess(Protocol):
    """Open vCenter sessions (and guest credentials) for the connections a job touches."""

    def client(self, connection_id: int) -> Any: ...
    def guest(self, connection_id: int) -> GuestRunner: ...


@dataclass(frozen=True)
class PolicySpec:
    """The parts of a policy a strategy reads."""

    id: int
    name: str
    consistency: Consistency
    pre_script: str | None
    post_script: str | None
    script_timeout_s: int
    keep_on_primary: int


@dataclass(frozen=True)
class TargetSpec:
    """One server, or one database on it, with where its VM lives."""

    server_id: int
    server_name: str
    connection_id: int
    vm_moref: str
    database_id: int | None = None
    database_name: str | None = None
    layout: DatabaseLayout | None = None

    @property
    def label(self) -> str:
        return self.server_name + (f"/{self.database_name}" if self.database_name else "")


@dataclass(frozen=True)
class CopyMade:
    location: CopyLocation
    reference: str
    connection_id: int | None = None
    size_bytes: int = 0


@dataclass
class BackupRun:
    """State carried through the steps of one backup."""

    ctx: StepContext
    job_id: int
    policy: PolicySpec
    target: TargetSpec
    consistency_reached: Consistency | None = None
    copies: list[CopyMade] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    _quiesced_at: float | None = None
    quiesce_window_s: float | None = None

    def quiesce_started(self) -> None:
        self._quiesced_at = time.monotonic()

    def resumed(self) -> None:
        if self._quiesced_at is not None:
            self.quiesce_window_s = round(time.monotonic() - self._quiesced_at, 3)

    @property
    def quiesced(self) -> bool:
        return self._quiesced_at is not None


class BackupStrategy(ABC):
    declaration: ClassVar[Declaration]

    def quiesce(self, run: BackupRun) -> None:  # noqa: B027 - most methods need no quiesce
        """Bring the database into the state the policy's consistency needs."""

    @abstractmethod
    def snapshot(self, run: BackupRun) -> None:
        """Capture the data; record a copy on ``run.copies`` and the consistency reached."""

    def resume(self, run: BackupRun) -> None:  # noqa: B027
        """Undo ``quiesce``. Runs whenever quiesce started, even after a failure."""

    def copy(self, run: BackupRun) -> None:  # noqa: B027 - off-host copy comes per method
        """Move the captured data off the host (the repository)."""

    @abstractmethod
    def cleanup(self, ctx: StepContext, leftovers: list[dict[str, Any]]) -> None:
        """Remove what an interrupted run left behind. Idempotent."""

    def run(self, run: BackupRun) -> None:
        ctx = run.ctx
        ctx.check_cancelled()
        failed = False
        try:
            ctx.step("quiesce")
            self.quiesce(run)
            ctx.check_cancelled()
            ctx.step("snapshot")
            self.snapshot(run)
        except BaseException:
            failed = True
            raise
        finally:
            if run.quiesced:
                ctx.step("resume")
                try:
                    self.resume(run)
                except Exception as exc:
                    if not failed:
                        raise
                    # The first failure is the job's error; this one must not hide it.
                    ctx.event(f"resume failed as well: {exc}", EventLevel.ERROR, step="resume")
        ctx.check_cancelled()
        ctx.step("copy")
        self.copy(run)
