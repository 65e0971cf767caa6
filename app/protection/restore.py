"""Restore jobs. From a VM snapshot: revert the VM to it (instant recovery).

Reverting discards everything the VM wrote since the snapshot; the API asks the operator to
confirm by typing the server's name, and every restore is audited.
"""

from __future__ import annotations

from app.adapters import vsphere
from app.audit import Actor, record
from app.db.models import ExchangeServer, RestorePoint
from app.domain.jobs import JobKind
from app.domain.protection import CopyLocation, RestorePointStatus
from app.jobs.context import JobContext, JobResult, PermanentError
from app.jobs.handlers import register
from app.protection.vcenter_access import for_job

MODES = ("revert",)


def run_restore(ctx: JobContext) -> JobResult:
    mode = ctx.params.get("mode", "revert")
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


register(JobKind.RESTORE, run_restore, capabilities=("vcenter",))
