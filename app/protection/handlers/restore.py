"""Restore jobs. From a VM snapshot: revert the VM to it (instant recovery).

Reverting discards everything the VM wrote since the snapshot; the API asks the operator to
confirm by typing the server's name, and every restore is audited.
"""

from __future__ import annotations

from app.adapters import vsphere
from app.audit import Actor, record
from app.db.models import ExchangeServer, RestorePoint
from app.db.types import utcnow
from app.domain.jobs import JobKind
from app.domain.protection import CopyLocation, RestorePointStatus
from app.jobs.context import JobContext, JobResult, PermanentError
from app.jobs.handlers import register
from app.protection.bindings.vcenter import for_job
from app.protection.catalog.copies import mark_gone
from app.protection.restores import agent as agent_restore
from app.protection.restores import array as array_restore
from app.protection.restores import disk as restore_repository
from app.protection.restores import mailbox as mailbox_restore
from app.protection.restores import new_vm as restore_new_vm

MODES = ("revert", restore_repository.MODE)


def run_restore(ctx: JobContext) -> JobResult:
    if mailbox_restore.handles(ctx):  # mail over IMAP, not a VM
        return mailbox_restore.run(ctx)
    if array_restore.handles(ctx):
        return array_restore.run_array_restore(ctx)
    if agent_restore.handles(ctx):
        return agent_restore.run(ctx)
    mode = ctx.params.get("mode", "revert")
    if mode == restore_repository.MODE:
        return restore_repository.run_disk_restore(ctx)
    if mode == restore_new_vm.MODE:
        return restore_new_vm.run(ctx)
    if mode not in MODES:
        raise PermanentError(f"restore mode '{mode}' is not available")
    with ctx.db.session() as session:
        point = session.get(RestorePoint, ctx.params.get("restore_point_id"))
        if point is None or point.status != RestorePointStatus.AVAILABLE:
            raise PermanentError("the restore point is gone or expired")
        copy = next(
            (
                c
                for c in point.copies
                if c.location == CopyLocation.VM_SNAPSHOT and c.removed_at is None
            ),
            None,
        )
        if copy is None:
            raise PermanentError(f"restore point {point.id} has no VM snapshot to revert to")
        server = session.get(ExchangeServer, point.server_id)
        name = server.name if server else "the VM"
        snapshot, connection_id = copy.reference, copy.connection_id
    access = for_job(ctx)
    try:
        ctx.step("revert", f"reverting {name} to snapshot {snapshot} (restore point {point.id})")
        vsphere.revert_snapshot(access.client(connection_id), snapshot)
    except vsphere.ObjectNotFound as exc:
        # Deleted outside Bulwark since the last sync: the catalog learns it now, so the
        # point stops offering the revert (and the operator is told if nothing is left).
        with ctx.db.session() as session:
            point = session.get(RestorePoint, point.id)
            gone = [c for c in point.copies if c.reference == snapshot and c.removed_at is None]
            if gone:
                mark_gone(session, point, gone, now=utcnow(), how=f"revert job {ctx.job_id}: {exc}")
        raise PermanentError(
            f"restore point {point.id}: its VM snapshot {snapshot} is gone ({exc}); "
            "the restore point no longer offers a revert"
        ) from exc
    finally:
        access.close()
    with ctx.db.session() as session:
        record(
            session,
            Actor(ctx.params.get("requested_by", "system"), "user"),
            "restore.revert",
            "restore_point",
            point.id,
            job=ctx.job_id,
            server=name,
            snapshot=snapshot,
        )
    ctx.progress(percent=100)
    return JobResult(message=f"{name} reverted to restore point {point.id}")


def cleanup_restore(ctx: JobContext, leftovers: list[dict]) -> None:
    restore_repository.cleanup_disk_restore(ctx, leftovers)
    array_restore.cleanup_array_restore(ctx, leftovers)
    restore_new_vm.cleanup(ctx, leftovers)
    if agent_restore.handles(ctx):
        agent_restore.cleanup(ctx, leftovers)


# No capability for the kind as a whole: each restore job names what it needs (vCenter, an
# array, a mail server), so a mail-only proxy can take mailbox restores.
register(JobKind.RESTORE, run_restore, cleanup_restore)
