"""Restore mode ``revert``: revert the VM to its snapshot (instant recovery).

Reverting discards everything the VM wrote since the snapshot; the API asks the operator to
confirm by typing the server's name, and every restore is audited.
"""

from __future__ import annotations

from typing import Any

from app.adapters import vsphere
from app.db.models import ExchangeServer, RestorePoint
from app.db.types import utcnow
from app.domain.protection import CopyLocation, RestorePointStatus, RestoreRefused
from app.jobs.context import JobContext, JobResult, PermanentError
from app.protection.bindings.vcenter import for_job
from app.protection.catalog.copies import mark_gone
from app.protection.restores.registry import RestoreMode, audit, register, vm_point

MODE = "revert"


def confirm(point: RestorePoint, server_name: str, params: dict[str, Any]) -> None:
    """A revert discards what the server wrote since: the operator types its name."""
    if point.live_copy(CopyLocation.VM_SNAPSHOT) is None:
        raise RestoreRefused(
            f"restore point {point.id} has no VM snapshot left to revert to",
            field="restore_point_id",
        )
    if params.get("confirm") != server_name:
        when = f"{point.captured_at:%Y-%m-%d %H:%M} UTC"
        raise RestoreRefused(
            f"restoring overwrites {server_name} with its state at {when}; confirm by setting "
            "params.confirm to the server's name"
        )


def run(ctx: JobContext) -> JobResult:
    with ctx.db.session() as session:
        point = session.get(RestorePoint, ctx.params.get("restore_point_id"))
        if point is None or point.status != RestorePointStatus.AVAILABLE:
            raise PermanentError("the restore point is gone or expired")
        copy = point.live_copy(CopyLocation.VM_SNAPSHOT)
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
            gone = [c for c in point.live_copies() if c.reference == snapshot]
            if gone:
                mark_gone(session, point, gone, now=utcnow(), how=f"revert job {ctx.job_id}: {exc}")
        raise PermanentError(
            f"restore point {point.id}: its VM snapshot {snapshot} is gone ({exc}); "
            "the restore point no longer offers a revert"
        ) from exc
    finally:
        access.close()
    audit(ctx, "restore.revert", "restore_point", point.id, server=name, snapshot=snapshot)
    ctx.progress(percent=100)
    return JobResult(message=f"{name} reverted to restore point {point.id}")


REVERT = register(RestoreMode((MODE,), vm_point, ("vcenter",), run, confirm))
