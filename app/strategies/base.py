"""The strategy interface: a protection method as explicit steps with cleanup that always runs.

A backup runs ``quiesce → snapshot → resume → copy``; the job handler then writes the catalog
and runs ``retain`` (retention on primary storage), the same for every method. ``resume`` runs
whenever ``quiesce`` started, whatever happened after. Quiescing is a collaborator
(app.strategies.quiesce) picked from the method's consistency table for the policy's level.
Everything a step creates outside Bulwark is recorded as a leftover through the job context
first, so a failed attempt, or a worker that died, is cleaned up by ``cleanup`` (also run by
whoever takes a dead worker's job over).

A strategy is handed what it needs: a :class:`StrategyServices` (vCenter sessions, catalog
queries, the repository, the array; app.protection.bindings.services provides it) and a
:class:`StepContext`. It never opens a database session itself.
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
from app.strategies.quiesce import Quiescer, quiescer_for


class StepContext(Protocol):
    """What a strategy may do with its job (app.jobs.context.JobContext provides it)."""

    def step(self, name: str, message: str | None = None) -> None: ...
    def event(self, message: str, level: Any = ..., step: str | None = None) -> None: ...
    def warning(self, message: str) -> None: ...
    def check_cancelled(self) -> None: ...
    def progress(
        self,
        percent: float | None = None,
        *,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
    ) -> None: ...
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
    repository_id: int | None = None  # where off-host copies go


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


@dataclass(frozen=True)
class PointView:
    """An earlier restore point of the target, as a strategy reads it."""

    id: int
    details: dict[str, Any]
    copies: tuple[CopyMade, ...]  # its live copies

    def live(self, location: CopyLocation, connection_id: int | None = None) -> list[CopyMade]:
        return [
            c
            for c in self.copies
            if c.location == location
            and (connection_id is None or c.connection_id == connection_id)
        ]


@dataclass(frozen=True)
class PrimaryCopy:
    """A copy on primary storage that retention takes away (handed to the strategy's
    remover)."""

    point_id: int
    reference: str
    connection_id: int | None
    details: dict[str, Any]  # the restore point's (the snapshot's name is there)


class StrategyServices(Protocol):
    """What a strategy may ask of the layers around it."""

    vcenter: VCenterAccess

    def recent_points(
        self,
        target: TargetSpec,
        method: Any,
        *,
        policy_id: int | None = None,
        whole_server: bool = False,
        limit: int = 5,
    ) -> list[PointView]:
        """The target's available restore points of ``method``, newest first (of this policy
        only, when given; of every database of the server with ``whole_server``)."""
        ...

    def cataloged(
        self, location: CopyLocation, reference: str, connection_id: int | None = None
    ) -> bool:
        """Does the catalog name this copy? Then it is no leftover to remove."""
        ...

    def retain_on_primary(
        self,
        policy_id: int,
        target: TargetSpec,
        location: CopyLocation,
        keep: int,
        remove: Callable[[PrimaryCopy], bool],
    ) -> list[int]:
        """The catalog's one primary-retention rule, with this method's remover."""
        ...

    def open_repository(self, repository_id: int) -> Any: ...
    def open_array(self, connection_id: int) -> Any: ...
    def database_volumes(self, target: TargetSpec) -> Any:
        """Where the target database's LUNs are on an array (array id and name, NAA ids by
        role, consistency group)."""
        ...


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
    quiescer: Quiescer | None = None  # picked from the consistency table when the run starts

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
    # Where the method keeps copies on primary storage for instant recovery (None: nowhere);
    # ``retain`` keeps the policy's ``keep_on_primary`` newest there.
    primary: ClassVar[CopyLocation | None] = None

    def __init__(self, services: StrategyServices) -> None:
        self.services = services

    def quiesce(self, run: BackupRun) -> None:
        """Bring the database into the state the policy's consistency needs."""
        run.quiescer.quiesce(run)

    @abstractmethod
    def snapshot(self, run: BackupRun) -> None:
        """Capture the data; record a copy on ``run.copies`` and the consistency reached."""

    def resume(self, run: BackupRun) -> None:
        """Undo ``quiesce``. Runs whenever quiesce started, even after a failure."""
        run.quiescer.resume(run)

    def copy(self, run: BackupRun) -> None:  # noqa: B027 - off-host copy comes per method
        """Move the captured data off the host (the repository)."""

    def retain(self, run: BackupRun) -> list[int]:
        """After the catalog write: keep the policy's newest copies on primary storage and
        take the older ones away (the catalog's one rule, this method's remover). Returns the
        restore points that lost their copy there."""
        if self.primary is None:
            return []
        return self.services.retain_on_primary(
            run.policy.id,
            run.target,
            self.primary,
            run.policy.keep_on_primary,
            self.remove_from_primary,
        )

    def remove_from_primary(self, copy: PrimaryCopy) -> bool:
        """Remove one copy at ``primary`` outside Bulwark; False for one Bulwark did not make
        (never removed)."""
        raise NotImplementedError(f"{type(self).__name__} keeps nothing on primary storage")

    @abstractmethod
    def cleanup(self, ctx: StepContext, leftovers: list[dict[str, Any]]) -> None:
        """Remove what an interrupted run left behind. Idempotent."""

    def clean_each(
        self,
        ctx: StepContext,
        leftovers: list[dict[str, Any]],
        clean: Callable[[StepContext, dict[str, Any]], None],
        *,
        catch: type[Exception] | tuple[type[Exception], ...],
        error: Callable[[str], Exception],
    ) -> None:
        """Clean each leftover on its own: one that fails again must not keep the others (an
        orphan snapshot) in place. What could not be cleaned stays recorded for the next
        try, and ``error`` of all the reasons is raised at the end."""
        failures = []
        for item in leftovers:
            try:
                clean(ctx, item)
            except catch as exc:
                failures.append(f"{item.get('kind')}: {exc}")
                ctx.event(
                    f"could not clean up {item.get('kind')}: {exc}", EventLevel.ERROR, "cleanup"
                )
                continue
            ctx.remove_leftover(item)
        if failures:
            raise error("; ".join(failures))

    def run(self, run: BackupRun) -> None:
        ctx = run.ctx
        if run.quiescer is None:
            run.quiescer = quiescer_for(self.declaration, run, self.services.vcenter)
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
