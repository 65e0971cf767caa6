"""The inventory sync job: read vCenter in bulk, store it, discover Exchange servers."""

from __future__ import annotations

from app.adapters import vsphere
from app.db.models import Connection
from app.domain.connections import ConnectionStatus
from app.domain.jobs import EventLevel, JobKind
from app.inventory import sync
from app.inventory.vcenter import fix_for, open_client
from app.jobs.context import JobContext, JobResult, PermanentError
from app.jobs.handlers import register
from app.protection.bindings.vcenter import job_secrets


def run_sync(ctx: JobContext) -> JobResult:
    secrets = job_secrets(ctx)
    connection_id = ctx.params.get("connection_id")
    with ctx.db.session() as session:
        conn = session.get(Connection, connection_id)
        if conn is None:
            raise PermanentError(f"connection {connection_id} no longer exists")
        session.expunge(conn)
    ctx.step("read", f"reading the inventory of {conn.name}")
    try:
        with open_client(conn, secrets) as client:
            inventory = vsphere.read_inventory(client)
    except vsphere.VSphereError as exc:
        with ctx.db.session() as session:
            row = session.get(Connection, connection_id)
            row.status, row.last_error = ConnectionStatus.FAILED, str(exc)
        if exc.permanent:
            raise PermanentError(f"vCenter '{conn.name}': {exc}", fix=fix_for(conn, exc)) from exc
        raise
    ctx.step("store", f"storing {len(inventory.vms)} VMs")
    with ctx.db.session() as session:
        summary = sync.sync_connection(session, connection_id, inventory)
        row = session.get(Connection, connection_id)
        row.status, row.last_error = ConnectionStatus.OK, None
    for line in summary.copies_gone:
        ctx.event(line, EventLevel.WARNING)
    ctx.progress(percent=100)
    return JobResult(
        message=f"{summary.vms} VMs, {len(summary.servers_discovered)} Exchange servers discovered",
        details={
            "vms": summary.vms,
            "problems": summary.problems,
            "copies_gone": summary.copies_gone,
        },
        partial=bool(summary.problems),
    )


register(JobKind.SYNC, run_sync, capabilities=("vcenter",))
