"""Restore a VM snapshot as a new VM ("revert to a new VM").

The Exchange server stays as it is: vCenter clones its VM from the restore point's snapshot
under a name the operator gives, beside the original, powered off unless asked (two copies of
one Exchange server on the same network would fight over its name and databases). Every such
restore is audited. A clone this job was making when it failed or its worker died is removed
by cleanup, found by its name and the job's mark, never a VM that only shares the name.
"""

from __future__ import annotations

import re
from typing import Any

from app.adapters import vsphere
from app.db.models import ExchangeServer, RestorePoint
from app.domain.jobs import EventLevel
from app.domain.protection import CopyLocation, RestorePointStatus, RestoreRefused
from app.jobs.context import JobContext, JobResult, PermanentError
from app.protection.bindings.vcenter import for_job
from app.protection.restores.registry import RestoreMode, audit, register, vm_point

MODE = "new_vm"
LEFTOVER = "new_vm"
# vSphere allows up to 80 characters; '/', '\' and '%' are escaped in inventory paths, and a
# name that needs escaping is a mistake more often than an intent.
_NAME = re.compile(r"^[^/\\%\x00-\x1f]{1,80}$")


def live_snapshot(point: RestorePoint):
    return point.live_copy(CopyLocation.VM_SNAPSHOT)


def confirm(point: RestorePoint, server_name: str, params: dict[str, Any]) -> None:
    """Check a request (the API's and the dashboard's): a new name, typed twice."""
    name = str(params.get("new_vm_name") or "").strip()
    if not name:
        raise RestoreRefused("a restore as a new VM needs params.new_vm_name")
    if not _NAME.match(name):
        raise RestoreRefused(
            "params.new_vm_name must be 1 to 80 characters without '/', '\\' or '%'"
        )
    if name.casefold() == server_name.casefold():
        raise RestoreRefused(f"the new VM needs a name other than {server_name}'s")
    if "power_on" in params and not isinstance(params["power_on"], bool):
        raise RestoreRefused("params.power_on is true or false")
    if live_snapshot(point) is None:
        raise RestoreRefused(f"restore point {point.id} has no VM snapshot left to clone from")
    if str(params.get("confirm") or "").strip() != name:
        raise RestoreRefused(
            f"restoring {server_name} as a new VM creates {name!r} from its state at "
            f"{point.captured_at:%Y-%m-%d %H:%M} UTC; confirm by setting params.confirm to "
            "the new VM's name"
        )


def run(ctx: JobContext) -> JobResult:
    name = str(ctx.params.get("new_vm_name") or "").strip()
    power_on = ctx.params.get("power_on") is True
    with ctx.db.session() as session:
        point = session.get(RestorePoint, ctx.params.get("restore_point_id"))
        if point is None or point.status != RestorePointStatus.AVAILABLE:
            raise PermanentError("the restore point is gone or expired")
        server = session.get(ExchangeServer, point.server_id) if point.server_id else None
        copy = live_snapshot(point)
        if copy is None or server is None:
            raise PermanentError(f"restore point {point.id} has no VM snapshot to clone from")
        source_vm = point.details.get("vm") or server.vm_moref
        server_name, point_id = server.name, point.id
        snapshot, connection_id = copy.reference, copy.connection_id
    if not name or source_vm is None:
        raise PermanentError("the restore names no new VM, or the server has no VM")
    item = {
        "kind": LEFTOVER,
        "connection_id": connection_id,
        "vm": source_vm,
        "name": name,
        "mark": _mark(ctx),
    }
    access = for_job(ctx)
    partial, note = False, ""
    try:
        client = access.client(connection_id)
        ctx.step("clone", f"cloning {server_name} from snapshot {snapshot} as {name!r}")
        ctx.add_leftover(item)  # a clone cut short is removed by cleanup
        try:
            clone = vsphere.clone_from_snapshot(
                client, source_vm, snapshot, name, mark=item["mark"], cancel_check=ctx.cancelled
            )
        except vsphere.NameTaken as exc:
            raise PermanentError(str(exc)) from exc
        ctx.remove_leftover(item)  # the new VM is what the operator asked for: keep it
        ctx.event(f"created {name} ({clone.moref}), powered off")
        if power_on:
            ctx.step("power_on", f"powering on {name}")
            try:
                vsphere.power_on(client, clone.moref)
            except vsphere.VSphereError as exc:
                partial, note = True, f"; it could not be powered on: {exc}"
                ctx.event(f"could not power on {name}: {exc}", EventLevel.WARNING)
    finally:
        access.close()
    audit(
        ctx,
        "restore.new_vm",
        "restore_point",
        point_id,
        server=server_name,
        snapshot=snapshot,
        new_vm=name,
        new_vm_moref=clone.moref,
        powered_on=power_on and not partial,
    )
    ctx.progress(percent=100)
    return JobResult(
        partial=partial,
        message=f"{server_name} restored as new VM {name} from restore point {point_id}{note}",
        details={"vm": clone.moref, "name": name, "powered_on": power_on and not partial},
    )


def cleanup(ctx: JobContext, leftovers: list[dict[str, Any]]) -> None:
    """Remove a clone this job made and did not finish (found by name and mark)."""
    mine = [item for item in leftovers if item.get("kind") == LEFTOVER]
    if not mine:
        return
    access = for_job(ctx)
    try:
        for item in mine:
            client = access.client(item["connection_id"])
            found = vsphere.clone_made_by(client, item["vm"], item["name"], item["mark"])
            if found is not None:
                vsphere.destroy_vm(client, found)
                ctx.event(f"removed {item['name']} ({found}), a clone left unfinished")
            ctx.remove_leftover(item)
    finally:
        access.close()


def _mark(ctx: JobContext) -> str:
    return f"job-{ctx.job_id}"


NEW_VM = register(RestoreMode((MODE,), vm_point, ("vcenter",), run, confirm, cleanup))
