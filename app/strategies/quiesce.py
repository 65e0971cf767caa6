"""Quiescing, as a collaborator a strategy is handed: who brings the database into the state
the policy's consistency needs, and undoes it afterwards.

Which quiescer a backup gets is read from the method's consistency table (the ``by`` of each
``Reach`` in app/strategies/declarations.py), the same table the advisor checks a policy
against, so a policy that passes validation is quiesced the way the advisor promised:

- ``tools``: VMware Tools drives VSS in the guest during the VMFS snapshot (the strategy asks
  for a quiesced snapshot; nothing runs before or after);
- ``scripts``: the policy's pre-snapshot script quiesces (or dismounts) the database and its
  post-snapshot script resumes (or mounts) it, run in the guest through VMware Tools;
- ``agent``: an Exchange-aware agent in the guest freezes the database; until the in-guest
  agent drives this itself, its freeze and thaw commands are the policy's scripts;
- ``power_off``: the VM is shut down for the snapshot and powered on again;
- ``none``: nothing; the snapshot is crash-consistent.

The restore point records the consistency actually reached (:meth:`Quiescer.reached`), never
the one asked for. What a quiescer leaves in the outside world (a quiesced database, a VM
powered off) is a leftover the job records first; :func:`clean_leftover` undoes it after a
crash, whoever runs the cleanup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.adapters import vsphere
from app.domain.declarations import Declaration, Quiesce
from app.domain.jobs import EventLevel
from app.domain.protection import Consistency, DatabaseLayout

if TYPE_CHECKING:  # base imports this module: the run and context types only
    from app.strategies.base import BackupRun, StepContext, VCenterAccess

# Exchange's VSS writer tolerates a freeze of about 20 s; warn well before.
QUIESCE_BUDGET_S = 20.0
QUIESCE_WARNING_S = 15.0
QUIESCE_LEFTOVERS = ("quiesced", "powered_off")


class Quiescer:
    """Nothing to do: the snapshot is crash-consistent."""

    # True when VMware Tools quiesces the guest during the snapshot itself.
    by_tools = False

    def __init__(self, access: VCenterAccess) -> None:
        self._access = access

    def quiesce(self, run: BackupRun) -> None:
        """Bring the database into the state the consistency needs."""

    def resume(self, run: BackupRun) -> None:
        """Undo :meth:`quiesce`. Runs whenever quiesce started, even after a failure."""

    def reached(self, run: BackupRun) -> Consistency:
        return Consistency.CRASH


class ToolsQuiesce(Quiescer):
    by_tools = True

    def reached(self, run: BackupRun) -> Consistency:
        return Consistency.HOT_APPLICATION


class PowerOff(Quiescer):
    def quiesce(self, run: BackupRun) -> None:
        target = run.target
        client = self._access.client(target.connection_id)
        if vsphere.power_state(client, target.vm_moref) == "poweredOff":
            # Already off: nothing to shut down, and nothing to power on afterwards.
            run.details["vm_was_off"] = True
            run.ctx.event(f"{target.server_name} is already powered off", step="quiesce")
            return
        run.ctx.add_leftover(leftover(run, "powered_off"))
        run.quiesce_started()
        how = vsphere.shut_down(client, target.vm_moref, timeout=run.policy.script_timeout_s * 10)
        run.details["shutdown"] = how
        run.ctx.event(
            f"{target.server_name} shut down for a cold snapshot ({how.replace('_', ' ')})",
            step="quiesce",
        )

    def resume(self, run: BackupRun) -> None:
        vsphere.power_on(self._access.client(run.target.connection_id), run.target.vm_moref)
        run.resumed()
        report_window(run)
        run.ctx.remove_leftover(leftover(run, "powered_off"))

    def reached(self, run: BackupRun) -> Consistency:
        return Consistency.COLD


class GuestScripts(Quiescer):
    """The policy's pre- and post-snapshot scripts (validation makes sure it has both)."""

    def quiesce(self, run: BackupRun) -> None:
        target, policy = run.target, run.policy
        if not policy.pre_script:
            return  # nothing quiesces: the snapshot is crash-consistent, and says so
        run.ctx.add_leftover(leftover(run, "quiesced"))
        run.quiesce_started()
        # From here on the database may be quiesced: resume runs whatever happens next.
        run.details["pre_script_started"] = True

        def started(pid: int) -> None:
            # Whoever cleans up after a crash waits for this process before resuming.
            before = leftover(run, "quiesced")
            run.details["pre_script_pid"] = pid
            run.ctx.add_leftover(leftover(run, "quiesced"))
            run.ctx.remove_leftover(before)

        result = run_script(
            self._access,
            target.connection_id,
            target.vm_moref,
            policy.pre_script,
            policy.script_timeout_s,
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
        target = run.target
        if not run.details.get("pre_script_started"):
            return
        if not run.policy.post_script:
            run.resumed()
            run.ctx.warning("no post-snapshot script: nothing resumes the database in the guest")
            run.ctx.remove_leftover(leftover(run, "quiesced"))
            return
        result = run_script(
            self._access,
            target.connection_id,
            target.vm_moref,
            run.policy.post_script,
            run.policy.script_timeout_s,
        )
        run.resumed()
        report_window(run)
        run.details["post_script_exit"] = result.exit_code
        if result.exit_code != 0:
            # The database may still be frozen: say so loudly; the job fails.
            raise vsphere.VSphereError(
                f"the post-snapshot script failed in {target.server_name} "
                f"(exit code {result.exit_code}); check the database is mounted"
            )
        run.ctx.remove_leftover(leftover(run, "quiesced"))

    def reached(self, run: BackupRun) -> Consistency:
        # The scripts bring about what the table says they do for this level (hot crash-
        # consistent, warm; on an array the freeze is VSS-aware: hot application-consistent).
        if run.details.get("quiesced_by_script"):
            return run.policy.consistency
        return Consistency.CRASH


QUIESCERS: dict[Quiesce, type[Quiescer]] = {
    Quiesce.NONE: Quiescer,
    Quiesce.TOOLS: ToolsQuiesce,
    Quiesce.SCRIPTS: GuestScripts,
    Quiesce.AGENT: GuestScripts,  # the agent's freeze command, given as the policy's script
    Quiesce.POWER_OFF: PowerOff,
}


def quiescer_for(declaration: Declaration, run: BackupRun, access: VCenterAccess) -> Quiescer:
    """The quiescer the consistency table names for this policy's level on this target."""
    layout = run.target.layout or DatabaseLayout.VMDK  # a whole VM: its system disk
    reach = declaration.reach(layout, run.policy.consistency)
    if reach is None:
        # Validation refuses such a policy; one saved before that rule gets no promise kept.
        run.ctx.warning(
            f"{declaration.title} cannot reach {run.policy.consistency.value} on this "
            "target: the snapshot is crash-consistent"
        )
        return Quiescer(access)
    return QUIESCERS[reach.by](access)


# -- shared pieces -------------------------------------------------------------------------


def run_script(
    access: VCenterAccess,
    connection_id: int,
    vm: str,
    command: str,
    timeout_s: float,
    on_started: Callable[[int], None] | None = None,
):
    return access.guest(connection_id).run(
        access.client(connection_id), vm, command, timeout_s=timeout_s, on_started=on_started
    )


def report_window(run: BackupRun) -> None:
    window = run.quiesce_window_s
    if window is not None:
        level = EventLevel.WARNING if window >= QUIESCE_WARNING_S else EventLevel.INFO
        run.ctx.event(
            f"quiesce window {window:.2f} s (Exchange tolerates about {QUIESCE_BUDGET_S:.0f} s)",
            level,
            step="resume",
        )


def leftover(run: BackupRun, kind: str, **extra: Any) -> dict[str, Any]:
    """A leftover of this run in the VM (its snapshot, a quiesced database, a VM left off)."""
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


def clean_leftover(access: VCenterAccess, ctx: StepContext, item: dict[str, Any]) -> None:
    """Undo a quiesce an interrupted run left: resume the database, power the VM on."""
    kind = item["kind"]
    if kind == "quiesced" and item.get("post_script"):
        _wait_for_pre_script(access, ctx, item)
        result = run_script(
            access,
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
    elif kind == "powered_off" and vsphere.power_on(
        access.client(item["connection_id"]), item["vm"]
    ):
        ctx.event("powered the VM on again after an interrupted cold backup", step="cleanup")


def _wait_for_pre_script(access: VCenterAccess, ctx: StepContext, item: dict[str, Any]) -> None:
    """A pre-snapshot script a dead worker started may still be running in the guest:
    resuming before it ends would leave the database quiesced. Wait for it (stop it after
    the policy's script timeout), then resume."""
    pid = item.get("pre_pid")
    if not pid:
        return
    guest = access.guest(item["connection_id"])
    client = access.client(item["connection_id"])
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
