"""VMFS snapshot of an Exchange VM: the database on a VMDK or on a virtual-mode RDM.

Consistency, as the whitepaper has it:
- hot, application-consistent: ``CreateSnapshot_Task`` with quiesce; in a Windows guest VMware
  Tools drives VSS (a database on a VMDK);
- hot, crash-consistent with scripts: the policy's pre-snapshot script quiesces the database in
  the guest and its post-snapshot script resumes it (run through VMware Tools guest operations);
- warm: the pre-snapshot script dismounts the database, the post-snapshot script mounts it;
- cold: the VM is shut down for the snapshot and powered on again.
The restore point records the consistency actually reached, never the one asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.adapters import vsphere
from app.domain.jobs import EventLevel
from app.domain.protection import Consistency, CopyLocation
from app.strategies.base import BackupRun, BackupStrategy, CopyMade, StepContext, VCenterAccess
from app.strategies.declarations import VMFS_SNAPSHOT

SNAPSHOT_PREFIX = "bulwark-job-"
# Exchange's VSS writer tolerates a freeze of about 20 s; warn well before.
QUIESCE_BUDGET_S = 20.0
QUIESCE_WARNING_S = 15.0


def snapshot_name(job_id: int) -> str:
    return f"{SNAPSHOT_PREFIX}{job_id}"


def is_bulwark_snapshot(name: str) -> bool:
    return name.startswith(SNAPSHOT_PREFIX)


class VmSnapshot(BackupStrategy):
    declaration = VMFS_SNAPSHOT
    # Consistency levels the policy's pre/post-snapshot scripts bring about (array snapshots
    # add hot_application: there the pre-snapshot command is a VSS-aware freeze).
    script_quiesce_for: tuple[Consistency, ...] = (Consistency.HOT_CRASH_SCRIPTED, Consistency.WARM)

    def __init__(self, access: VCenterAccess):
        self._access = access

    def _client_for(self, connection_id: int) -> Any:
        return self._access.client(connection_id)

    def _run_script(
        self,
        connection_id: int,
        vm: str,
        command: str,
        timeout_s: float,
        on_started: Callable[[int], None] | None = None,
    ):
        return self._access.guest(connection_id).run(
            self._client_for(connection_id),
            vm,
            command,
            timeout_s=timeout_s,
            on_started=on_started,
        )

    # -- quiesce / resume ------------------------------------------------------------------
    def quiesce(self, run: BackupRun) -> None:
        asked, target = run.policy.consistency, run.target
        client = self._client_for(target.connection_id)
        if asked == Consistency.COLD:
            if vsphere.power_state(client, target.vm_moref) == "poweredOff":
                # Already off: nothing to shut down, and nothing to power on afterwards.
                run.details["vm_was_off"] = True
                run.ctx.event(f"{target.server_name} is already powered off", step="quiesce")
                return
            run.ctx.add_leftover(self._leftover(run, "powered_off"))
            run.quiesce_started()
            how = vsphere.shut_down(
                client, target.vm_moref, timeout=run.policy.script_timeout_s * 10
            )
            run.details["shutdown"] = how
            run.ctx.event(
                f"{target.server_name} shut down for a cold snapshot ({how.replace('_', ' ')})",
                step="quiesce",
            )
        elif asked in self.script_quiesce_for and run.policy.pre_script:
            run.ctx.add_leftover(self._leftover(run, "quiesced"))
            run.quiesce_started()
            # From here on the database may be quiesced: resume runs whatever happens next.
            run.details["pre_script_started"] = True

            def started(pid: int) -> None:
                # Whoever cleans up after a crash waits for this process before resuming.
                before = self._leftover(run, "quiesced")
                run.details["pre_script_pid"] = pid
                run.ctx.add_leftover(self._leftover(run, "quiesced"))
                run.ctx.remove_leftover(before)

            result = self._run_script(
                target.connection_id,
                target.vm_moref,
                run.policy.pre_script,
                run.policy.script_timeout_s,
                on_started=started,
            )
            run.details["pre_script_exit"] = result.exit_code
            if result.exit_code != 0:
                raise vsphere.VSphereError(
                    f"the pre-snapshot script failed in {target.server_name} "
                    f"(exit code {result.exit_code})"
                )
            run.details["quiesced_by_script"] = True

    def resume(self, run: BackupRun) -> None:
        target, client = run.target, self._client_for(run.target.connection_id)
        if run.policy.consistency == Consistency.COLD:
            vsphere.power_on(client, target.vm_moref)
            run.resumed()
            self._report_window(run)
            run.ctx.remove_leftover(self._leftover(run, "powered_off"))
        elif run.details.get("pre_script_started") and not run.policy.post_script:
            run.resumed()
            run.ctx.warning("no post-snapshot script: nothing resumes the database in the guest")
            run.ctx.remove_leftover(self._leftover(run, "quiesced"))
        elif run.details.get("pre_script_started"):
            result = self._run_script(
                target.connection_id,
                target.vm_moref,
                run.policy.post_script,
                run.policy.script_timeout_s,
            )
            run.resumed()
            self._report_window(run)
            run.details["post_script_exit"] = result.exit_code
            if result.exit_code != 0:
                # The database may still be frozen: say so loudly; the job fails.
                raise vsphere.VSphereError(
                    f"the post-snapshot script failed in {target.server_name} "
                    f"(exit code {result.exit_code}); check the database is mounted"
                )
            run.ctx.remove_leftover(self._leftover(run, "quiesced"))

    @staticmethod
    def _report_window(run: BackupRun) -> None:
        window = run.quiesce_window_s
        if window is not None:
            level = EventLevel.WARNING if window >= QUIESCE_WARNING_S else EventLevel.INFO
            run.ctx.event(
                f"quiesce window {window:.2f} s (Exchange tolerates about "
                f"{QUIESCE_BUDGET_S:.0f} s)",
                level,
                step="resume",
            )

    # -- snapshot ---------------------------------------------------------------------------
    def snapshot(self, run: BackupRun) -> None:
        target, policy = run.target, run.policy
        client = self._client_for(target.connection_id)
        name = snapshot_name(run.job_id)
        quiesce = policy.consistency == Consistency.HOT_APPLICATION
        # Recorded before the task starts: a crash mid-task still leaves a name to look for.
        run.ctx.add_leftover(self._leftover(run, "vm_snapshot", name=name))
        moref = vsphere.create_snapshot(
            client,
            target.vm_moref,
            name,
            description=(
                f"Bulwark restore point of {target.label}, policy '{policy.name}', "
                f"job {run.job_id}. Managed by Bulwark: do not remove by hand."
            ),
            quiesce=quiesce,
        )
        run.copies.append(CopyMade(CopyLocation.VM_SNAPSHOT, moref, target.connection_id))
        run.details.update(snapshot=moref, snapshot_name=name, vm=target.vm_moref)
        run.consistency_reached = self._reached(run, quiesce)
        run.ctx.event(
            f"snapshot {name} ({moref}) of {target.server_name} created, "
            f"{run.consistency_reached.value}",
            step="snapshot",
        )

    def _reached(self, run: BackupRun, quiesced_by_tools: bool) -> Consistency:
        asked = run.policy.consistency
        if asked == Consistency.COLD:
            return Consistency.COLD
        if quiesced_by_tools:
            return Consistency.HOT_APPLICATION
        if run.details.get("quiesced_by_script"):
            return Consistency.WARM if asked == Consistency.WARM else Consistency.HOT_CRASH_SCRIPTED
        return Consistency.CRASH

    # -- cleanup ----------------------------------------------------------------------------
    def cleanup(self, ctx: StepContext, leftovers: list[dict[str, Any]]) -> None:
        # Each leftover on its own: a post-snapshot script that fails again must not keep an
        # orphan snapshot in vCenter. What could not be cleaned stays recorded for the next try.
        failures = []
        for item in leftovers:
            try:
                self._clean_one(ctx, item)
            except vsphere.VSphereError as exc:
                failures.append(f"{item.get('kind')}: {exc}")
                ctx.event(
                    f"could not clean up {item.get('kind')}: {exc}", EventLevel.ERROR, "cleanup"
                )
                continue
            ctx.remove_leftover(item)
        if failures:
            raise vsphere.VSphereError("; ".join(failures))

    def _clean_one(self, ctx: StepContext, item: dict[str, Any]) -> None:
        client = self._client_for(item["connection_id"])
        kind = item["kind"]
        if kind == "vm_snapshot":
            for snap in vsphere.list_snapshots(client, item["vm"]):
                # Only ever the snapshot this job created, found by its Bulwark name.
                if snap.name == item["name"]:
                    vsphere.remove_snapshot(client, snap.moref)
                    ctx.event(
                        f"removed snapshot {snap.name} left by an interrupted run",
                        step="cleanup",
                    )
        elif kind == "quiesced" and item.get("post_script"):
            self._wait_for_pre_script(ctx, item)
            result = self._run_script(
                item["connection_id"],
                item["vm"],
                item["post_script"],
                item.get("timeout_s", 60),
            )
            if result.exit_code != 0:
                where = item.get("server") or item["vm"]
                raise vsphere.VSphereError(
                    f"the post-snapshot script failed again in {where} "
                    f"(exit code {result.exit_code}); check the database is mounted"
                )
            ctx.event("ran the post-snapshot script an interrupted run owed", step="cleanup")
        elif kind == "powered_off" and vsphere.power_on(client, item["vm"]):
            ctx.event("powered the VM on again after an interrupted cold backup", step="cleanup")

    def _wait_for_pre_script(self, ctx: StepContext, item: dict[str, Any]) -> None:
        """A pre-snapshot script a dead worker started may still be running in the guest:
        resuming before it ends would leave the database quiesced. Wait for it (stop it after
        the policy's script timeout), then resume."""
        pid = item.get("pre_pid")
        if not pid:
            return
        guest = self._access.guest(item["connection_id"])
        client = self._client_for(item["connection_id"])
        try:
            ended = guest.wait(client, item["vm"], pid, timeout_s=item.get("timeout_s", 60))
        except vsphere.TaskTimeout as exc:
            ctx.event(f"the interrupted pre-snapshot script was stopped: {exc}", step="cleanup")
            return
        if ended is not None:
            ctx.event(
                f"the interrupted pre-snapshot script (pid {pid}) ended with exit code "
                f"{ended.exit_code}",
                step="cleanup",
            )

    @staticmethod
    def _leftover(run: BackupRun, kind: str, **extra: Any) -> dict[str, Any]:
        item = {
            "kind": kind,
            "connection_id": run.target.connection_id,
            "vm": run.target.vm_moref,
            "server": run.target.server_name,
            **extra,
        }
        if kind == "quiesced":
            item.update(post_script=run.policy.post_script, timeout_s=run.policy.script_timeout_s)
            if run.details.get("pre_script_pid"):
                item["pre_pid"] = run.details["pre_script_pid"]
        return item
