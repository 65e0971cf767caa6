"""VMFS snapshot of an Exchange VM: the database on a VMDK or on a virtual-mode RDM.

Consistency, as the whitepaper has it (the quiescer is picked from the consistency table in
app/strategies/declarations.py; see app.strategies.quiesce):
- hot, application-consistent: ``CreateSnapshot_Task`` with quiesce; in a Windows guest VMware
  Tools drives VSS (a database on a VMDK);
- hot, crash-consistent with scripts: the policy's pre-snapshot script quiesces the database in
  the guest and its post-snapshot script resumes it (run through VMware Tools guest operations);
- warm: the pre-snapshot script dismounts the database, the post-snapshot script mounts it;
- cold: the VM is shut down for the snapshot and powered on again.
The restore point records the consistency actually reached, never the one asked for.
"""

from __future__ import annotations

import contextlib
from typing import Any

from app.adapters import vsphere
from app.domain.protection import CopyLocation
from app.strategies import quiesce
from app.strategies.base import BackupRun, BackupStrategy, CopyMade, PrimaryCopy, StepContext
from app.strategies.declarations import VMFS_SNAPSHOT

SNAPSHOT_PREFIX = "bulwark-job-"


def snapshot_name(job_id: int) -> str:
    return f"{SNAPSHOT_PREFIX}{job_id}"


def is_bulwark_snapshot(name: str) -> bool:
    return name.startswith(SNAPSHOT_PREFIX)


class VmSnapshot(BackupStrategy):
    declaration = VMFS_SNAPSHOT
    primary = CopyLocation.VM_SNAPSHOT

    def _client_for(self, connection_id: int) -> Any:
        return self.services.vcenter.client(connection_id)

    # -- snapshot ---------------------------------------------------------------------------
    def snapshot(self, run: BackupRun) -> None:
        target, policy = run.target, run.policy
        client = self._client_for(target.connection_id)
        name = snapshot_name(run.job_id)
        by_tools = run.quiescer.by_tools
        # Recorded before the task starts: a crash mid-task still leaves a name to look for.
        run.ctx.add_leftover(quiesce.leftover(run, "vm_snapshot", name=name))
        moref = vsphere.create_snapshot(
            client,
            target.vm_moref,
            name,
            description=(
                f"Bulwark restore point of {target.label}, policy '{policy.name}', "
                f"job {run.job_id}. Managed by Bulwark: do not remove by hand."
            ),
            quiesce=by_tools,
        )
        run.copies.append(CopyMade(CopyLocation.VM_SNAPSHOT, moref, target.connection_id))
        run.details.update(snapshot=moref, snapshot_name=name, vm=target.vm_moref)
        run.consistency_reached = run.quiescer.reached(run)
        run.ctx.event(
            f"snapshot {name} ({moref}) of {target.server_name} created, "
            f"{run.consistency_reached.value}",
            step="snapshot",
        )

    # -- retention on primary storage ---------------------------------------------------------
    def remove_from_primary(self, copy: PrimaryCopy) -> bool:
        if not is_bulwark_snapshot(copy.details.get("snapshot_name", "")):
            return False  # never remove a snapshot Bulwark did not create
        with contextlib.suppress(vsphere.ObjectNotFound):  # already gone: catch up
            vsphere.remove_snapshot(self._client_for(copy.connection_id), copy.reference)
        return True

    # -- cleanup ----------------------------------------------------------------------------
    def cleanup(self, ctx: StepContext, leftovers: list[dict[str, Any]]) -> None:
        self.clean_each(
            ctx, leftovers, self._clean_one, catch=vsphere.VSphereError, error=vsphere.VSphereError
        )

    def _clean_one(self, ctx: StepContext, item: dict[str, Any]) -> None:
        if item["kind"] != "vm_snapshot":
            quiesce.clean_leftover(self.services.vcenter, ctx, item)
            return
        client = self._client_for(item["connection_id"])
        for snap in vsphere.list_snapshots(client, item["vm"]):
            # Only ever the snapshot this job created, found by its Bulwark name.
            if snap.name == item["name"]:
                vsphere.remove_snapshot(client, snap.moref)
                ctx.event(
                    f"removed snapshot {snap.name} left by an interrupted run", step="cleanup"
                )
