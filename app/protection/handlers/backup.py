"""The backup job: a policy's run fans out into one job per target; each target's job runs
its strategy's steps, then writes the restore point and applies retention on primary storage.
Each strategy is handed the services it needs (app.protection.bindings.services).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.adapters import vsphere
from app.adapters.arrays import ArrayError
from app.audit import SYSTEM, Actor, record
from app.db.models import (
    ExchangeDatabase,
    ExchangeServer,
    Job,
    Policy,
    RestorePoint,
    RestorePointCopy,
    VirtualDisk,
    VirtualMachine,
)
from app.db.types import utcnow
from app.domain.jobs import JobKind
from app.domain.protection import CopyLocation, ProtectionMethod
from app.inventory.queries import server_vm
from app.jobs.context import JobContext, JobResult, PermanentError
from app.jobs.enqueue import enqueue
from app.jobs.handlers import JobRequest, Requirements, register
from app.protection.bindings import space
from app.protection.bindings.services import JobStrategyServices
from app.protection.bindings.vcenter import for_job
from app.protection.handlers import agent_backup, log_truncation, mailbox_backup
from app.repository import RepositoryError
from app.repository.connection import open_job_repository
from app.strategies.array_snapshot import ArraySnapshot
from app.strategies.base import BackupRun, BackupStrategy, PolicySpec, StrategyServices, TargetSpec
from app.strategies.declarations import DECLARATIONS
from app.strategies.vm_image import VmImage
from app.strategies.vm_snapshot import VmSnapshot

# Methods run as strategy steps (quiesce → snapshot → resume → copy). Mailbox backups go
# over IMAP instead (app.protection.handlers.mailbox_backup), the in-guest agent stream
# through the server's agent (app.protection.handlers.agent_backup).
STRATEGIES: dict[ProtectionMethod, type[BackupStrategy]] = {
    ProtectionMethod.VMFS_SNAPSHOT: VmSnapshot,
    ProtectionMethod.VM_IMAGE: VmImage,
    ProtectionMethod.ARRAY_SNAPSHOT: ArraySnapshot,
}


# Methods whose backups store into the policy's repository.
COPIES_OFF_HOST = frozenset({ProtectionMethod.VM_IMAGE, ProtectionMethod.ARRAY_SNAPSHOT})


def _strategy(method: ProtectionMethod, services: StrategyServices) -> BackupStrategy:
    cls = STRATEGIES.get(method)
    if cls is None:
        raise PermanentError(f"{DECLARATIONS[method].title} is not available yet in this version")
    return cls(services)


# -- fan-out ------------------------------------------------------------------------------


def _resources(session: Session, server: ExchangeServer) -> list[str]:
    """Host and datastores the target's VM uses, for the engine's per-resource limits."""
    vm = server_vm(session, server)
    if vm is None:
        return []
    found = {f"host:{vm.host_moref}"} if vm.host_moref else set()
    found |= {f"datastore:{d.datastore_moref}" for d in vm.disks if d.datastore_moref}
    return sorted(found)


def backup_requirements(session: Session, request: JobRequest) -> Requirements:
    """What a backup job of a policy's target needs (asked by enqueue): the proxy capability
    its method declares, and the host and datastores it will load (for per-resource limits).
    A policy-wide run (no target) needs nothing: the jobs it queues do."""
    if request.policy_id is None or request.server_id is None:
        return Requirements()
    policy = session.get(Policy, request.policy_id)
    if policy is None:
        return Requirements()
    capability = DECLARATIONS[policy.method].needs_proxy_capability
    server = session.get(ExchangeServer, request.server_id)
    return Requirements(
        (capability,) if capability else (),
        tuple(_resources(session, server)) if server else (),
    )


def dispatch(ctx: JobContext) -> JobResult:
    """A policy-wide run: queue one backup job per target (each then runs on its own)."""
    with ctx.db.session() as session:
        policy = session.get(Policy, ctx.policy_id)
        if policy is None:
            raise PermanentError(f"policy {ctx.policy_id} no longer exists")
        creator = session.scalar(select(Job.created_by).where(Job.id == ctx.job_id))
        # Loaded at once, so asking each child's requirements reads no server again.
        session.scalars(
            select(ExchangeServer).where(
                ExchangeServer.id.in_([t.server_id for t in policy.targets])
            )
        ).all()
        targets = list(policy.targets)
        if policy.method == ProtectionMethod.AGENT_STREAM:
            # Each DAG database once per run, whichever members the policy names.
            targets = agent_backup.one_per_dag_database(session, targets)
        ids = [
            enqueue(
                session,
                JobKind.BACKUP,
                actor=Actor(creator or "system", "system"),
                policy_id=policy.id,
                server_id=t.server_id,
                database_id=t.database_id,
                parent_id=ctx.job_id,
                audit=False,  # the run that queues them was audited when it was started
            ).id
            for t in targets
        ]
    ctx.event(f"queued {len(ids)} backup job(s): {', '.join(map(str, ids)) or 'none'}")
    return JobResult(message=f"dispatched {len(ids)} job(s)", details={"jobs": ids})


# -- one target -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Server:
    id: int
    name: str
    connection_id: int | None
    vm_moref: str | None


@dataclass(frozen=True)
class _Database:
    id: int
    name: str
    layout: Any
    database_disk_key: int | None
    log_disk_key: int | None


@dataclass(frozen=True)
class _Loaded:
    """What one target's backup reads from the database before it starts (one read)."""

    spec: PolicySpec
    target: TargetSpec
    method: ProtectionMethod
    retain_days: int | None  # compliance retention of the policy
    size_bytes: int  # what the restore point covers
    repository_id: int | None = None  # where the off-host copies go


def _load(session: Session, ctx: JobContext) -> _Loaded:
    # One query for the columns of policy, server and database (not their objects: nothing
    # here changes them, and the policy's targets are not needed).
    row = session.execute(
        select(
            Policy.id,
            Policy.name,
            Policy.method,
            Policy.consistency,
            Policy.pre_script,
            Policy.post_script,
            Policy.script_timeout_s,
            Policy.keep_on_primary,
            Policy.repository_id,
            Policy.compliance_retention_days,
            Policy.repository_id,
            ExchangeServer.id.label("server_id"),
            ExchangeServer.name.label("server_name"),
            ExchangeServer.connection_id,
            ExchangeServer.vm_moref,
            ExchangeDatabase.id.label("database_id"),
            ExchangeDatabase.name.label("database_name"),
            ExchangeDatabase.layout,
            ExchangeDatabase.database_disk_key,
            ExchangeDatabase.log_disk_key,
        )
        .select_from(Policy)
        .join(ExchangeServer, ExchangeServer.id == ctx.server_id)
        .outerjoin(
            ExchangeDatabase,
            (ExchangeDatabase.id == ctx.database_id)
            & (ExchangeDatabase.server_id == ExchangeServer.id),
        )
        .where(Policy.id == ctx.policy_id)
    ).first()
    if row is None:
        raise PermanentError("the policy or the server was removed before the backup ran")
    if row.connection_id is None or row.vm_moref is None:
        raise PermanentError(f"{row.server_name} is not linked to a VM in a vCenter")
    if ctx.database_id is not None and row.database_id is None:
        raise PermanentError("the database was removed before the backup ran")
    policy, server = row, _Server(row.server_id, row.server_name, row.connection_id, row.vm_moref)
    db = (
        _Database(
            row.database_id,
            row.database_name,
            row.layout,
            row.database_disk_key,
            row.log_disk_key,
        )
        if row.database_id is not None
        else None
    )
    spec = PolicySpec(
        policy.id,
        policy.name,
        policy.consistency,
        policy.pre_script,
        policy.post_script,
        policy.script_timeout_s,
        policy.keep_on_primary,
        policy.repository_id,
    )
    target = TargetSpec(
        server.id,
        server.name,
        server.connection_id,
        server.vm_moref,
        db.id if db else None,
        db.name if db else None,
        db.layout if db else None,
    )
    return _Loaded(
        spec,
        target,
        policy.method,
        policy.compliance_retention_days,
        _disk_bytes(session, target, db),
        policy.repository_id,
    )


def run_backup(ctx: JobContext) -> JobResult | None:
    if ctx.server_id is None:
        return dispatch(ctx)
    if mailbox_backup.handles(ctx):  # over IMAP: no vCenter, no strategy steps
        return mailbox_backup.run(ctx)
    if agent_backup.handles(ctx):  # through the in-guest agent: no vCenter either
        return agent_backup.run(ctx)
    with ctx.db.session() as session:
        loaded = _load(session, ctx)
        # One job, one restore point: an attempt that died after its catalog write (before
        # retention, or before the success was recorded) left the point made; the takeover
        # completes the job from there instead of backing up again.
        finished = session.execute(
            select(RestorePoint.id, RestorePoint.details)
            .where(RestorePoint.job_id == ctx.job_id)
            .limit(1)
        ).first()
    spec, target, method = loaded.spec, loaded.target, loaded.method
    access = for_job(ctx)
    quiesce_window_s = None
    try:
        strategy = _strategy(method, JobStrategyServices(ctx, access))
        # Retention reads only the policy and the target: a takeover that found its point
        # cataloged retains with a run that took nothing.
        run = BackupRun(ctx=ctx, job_id=ctx.job_id, policy=spec, target=target)
        if finished is not None:
            point_id = finished.id
            quiesce_window_s = (finished.details or {}).get("quiesce_window_s")
            ctx.event(
                f"restore point {point_id} was cataloged by an earlier attempt: "
                "completing the job from there"
            )
        else:
            _check_room(ctx, loaded)
            strategy.run(run)
            ctx.step("catalog")
            point_id = _catalog(
                ctx, run, method, retain_days=loaded.retain_days, size=loaded.size_bytes
            )
            quiesce_window_s = run.quiesce_window_s
        truncation_warning = None
        if finished is None or "truncation" not in (finished.details or {}):
            # Only now, with the restore point safe in the catalog, may Exchange truncate.
            truncation_warning = log_truncation.truncate(ctx, access, target, spec.id, point_id)
            if truncation_warning:
                ctx.warning(truncation_warning)
        ctx.step("retain")
        partial = False
        try:
            expired = strategy.retain(run)
        except (vsphere.VSphereError, ArrayError) as exc:
            # The backup is done and cataloged: running it again would only add another
            # snapshot. Older snapshots are expired by the next run instead.
            ctx.warning(f"retention on primary storage did not finish: {exc}")
            expired, partial = [], True
    finally:
        access.close()
    _record_space(ctx, loaded)
    ctx.progress(percent=100)
    return JobResult(
        partial=partial or bool(truncation_warning),
        message=f"restore point {point_id}"
        + (f" ({truncation_warning})" if truncation_warning else "")
        + (" (retention on primary storage did not finish)" if partial else ""),
        details={
            "restore_point_id": point_id,
            "expired": expired,
            "quiesce_window_s": quiesce_window_s,
        },
    )


def _check_room(ctx: JobContext, loaded: _Loaded) -> None:
    """A backup that cannot fit does not start (no snapshot, no quiesce for nothing)."""
    if loaded.repository_id is None or loaded.method not in COPIES_OFF_HOST:
        return
    try:
        repo = open_job_repository(ctx, loaded.repository_id)
    except (RepositoryError, PermanentError):
        return  # not reachable: the copy step says so, after the usual cleanup
    with ctx.db.session() as session:
        expected = space.expected_bytes(
            session,
            policy_id=loaded.spec.id,
            server_id=loaded.target.server_id,
            database_id=loaded.target.database_id,
        )
    space.check_room(repo, expected)


def _record_space(ctx: JobContext, loaded: _Loaded) -> None:
    """The repository's usage and free space after every backup (the notifier alerts)."""
    if loaded.repository_id is None or loaded.method not in COPIES_OFF_HOST:
        return
    try:
        repo = open_job_repository(ctx, loaded.repository_id)
        with ctx.db.session() as session:
            usage = space.record_space(session, repo)
            if usage is not None and usage.capacity_bytes:
                used = 100 * (usage.capacity_bytes - usage.free_bytes) / usage.capacity_bytes
                ctx.event(f"repository {used:.0f}% full, {usage.free_bytes / 2**30:.1f} GiB free")
    except RepositoryError as exc:  # measuring is not the backup: note it, do not fail
        ctx.warning(f"the repository's free space could not be measured: {exc}")


def _catalog(
    ctx: JobContext,
    run: BackupRun,
    method: ProtectionMethod,
    *,
    retain_days: int | None,
    size: int,
) -> int:
    declaration = DECLARATIONS[method]
    capabilities = set(declaration.restores)
    if any(c.location != CopyLocation.REPOSITORY for c in run.copies):
        capabilities |= declaration.restores_from_primary  # kept on primary: instant recovery
    with ctx.db.session() as session:
        point = RestorePoint(
            policy_id=run.policy.id,
            server_id=run.target.server_id,
            database_id=run.target.database_id,
            job_id=ctx.job_id,
            method=method,
            consistency=run.consistency_reached,
            capabilities=sorted(capabilities),
            size_bytes=size,
            retain_until=utcnow() + timedelta(days=retain_days) if retain_days else None,
            details={
                **run.details,
                "quiesce_window_s": run.quiesce_window_s,
                "asked_consistency": run.policy.consistency.value,
            },
        )
        point.copies = [
            RestorePointCopy(
                location=c.location,
                reference=c.reference,
                connection_id=c.connection_id,
                size_bytes=c.size_bytes or size,
            )
            for c in run.copies
        ]
        session.add(point)
        session.flush()
        record(
            session,
            SYSTEM,
            "restore_point.create",
            "restore_point",
            point.id,
            job=ctx.job_id,
            target=run.target.label,
            consistency=run.consistency_reached.value,
        )
        # The snapshot now belongs to the catalog: it stops being this job's leftover in the
        # same commit (and nothing is cataloged if another worker took the job over).
        ctx.clear_leftovers(session)
        return point.id


def _disk_bytes(session: Session, target: TargetSpec, db: _Database | None) -> int:
    """Provisioned size of what the restore point covers (the database disk, or the VM)."""
    query = (
        select(VirtualDisk)
        .join(VirtualMachine)
        .where(
            VirtualMachine.connection_id == target.connection_id,
            VirtualMachine.moref == target.vm_moref,
        )
    )
    disks = session.scalars(query).all()
    if target.database_id is not None:
        keys = {db.database_disk_key, db.log_disk_key} if db else set()
        disks = [d for d in disks if d.device_key in keys]
    return sum(d.capacity_bytes for d in disks)


def cleanup_backup(ctx: JobContext, leftovers: list[dict[str, Any]]) -> None:
    if mailbox_backup.handles(ctx):
        return mailbox_backup.cleanup(ctx, leftovers)
    if agent_backup.handles(ctx):
        return agent_backup.cleanup(ctx, leftovers)
    with ctx.db.session() as session:
        cataloged = session.scalar(select(RestorePoint.id).where(RestorePoint.job_id == ctx.job_id))
    if cataloged is not None:
        # The crash came after the catalog write: the snapshot is a restore point; keep it.
        leftovers = [item for item in leftovers if item.get("kind") != "vm_snapshot"]
    with ctx.db.session() as session:
        policy = session.get(Policy, ctx.policy_id) if ctx.policy_id else None
        method = policy.method if policy else ProtectionMethod.VMFS_SNAPSHOT
    access = for_job(ctx)
    try:
        _strategy(method, JobStrategyServices(ctx, access)).cleanup(ctx, leftovers)
    finally:
        access.close()


register(JobKind.BACKUP, run_backup, cleanup_backup, requires=backup_requirements)
