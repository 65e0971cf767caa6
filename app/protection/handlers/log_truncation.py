"""Exchange log truncation after a successful snapshot or image backup (policy setting
``truncate_logs``: require | try | off).

It runs only once the restore point is cataloged (safe): then a full VSS backup is completed
in the guest so Exchange truncates its logs — through VMware Tools guest operations with the
vCenter's guest account (a DiskShadow session built from Exchange's own paths; see
docs/agent.md). ``require`` fails the job when truncation fails (the restore point stays);
``try`` warns. The in-guest agent stream truncates on its own (agent_backup.py).
"""

from __future__ import annotations

from typing import Any

from app.db.models import Policy, RestorePoint
from app.jobs.context import JobContext, PermanentError

EXCHANGE_WRITER = "{76fe1ac4-15f7-4bcd-987e-8e1acb462fb7}"

# One line for StartProgramInGuest: the database's volumes from Get-MailboxDatabase, a
# DiskShadow script that completes a full backup (END BACKUP: Exchange truncates), run.
COMMAND = (
    'powershell.exe -NoProfile -NonInteractive -Command "'
    "Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn; "
    "$d = Get-MailboxDatabase '%DATABASE%'; "
    "$v = @((Split-Path -Qualifier $d.EdbFilePath), (Split-Path -Qualifier $d.LogFolderPath)) "
    "| Select-Object -Unique; "
    "$s = @('set context volatile', 'writer verify " + EXCHANGE_WRITER + "', 'begin backup') "
    "+ ($v | ForEach-Object { 'add volume ' + $_ }) + @('create', 'end backup'); "
    "$f = Join-Path $env:TEMP 'bulwark-truncate-%DATABASE%.dsh'; "
    "$s | Set-Content -Encoding ascii $f; diskshadow /s $f; exit $LASTEXITCODE"
    '"'
)


def setting(ctx: JobContext, policy_id: int) -> str:
    with ctx.db.session() as session:
        policy = session.get(Policy, policy_id)
        return policy.truncate_logs if policy else "off"


def truncate(
    ctx: JobContext, access: Any, target: Any, policy_id: int, point_id: int
) -> str | None:
    """Truncate after the point is safe; returns a warning (``try``) or raises (``require``)."""
    mode = setting(ctx, policy_id)
    if mode == "off" or target.database_name is None:
        return None
    ctx.step("truncate", f"the restore point is safe: Exchange truncates {target.database_name}")
    command = COMMAND.replace("%DATABASE%", target.database_name.replace("'", "''"))
    outcome: dict[str, Any] = {"via": "guest", "mode": mode}
    try:
        result = access.guest(target.connection_id).run(
            access.client(target.connection_id), target.vm_moref, command, timeout_s=600
        )
        outcome["exit_code"] = result.exit_code
        ok = result.exit_code == 0
        why = f"DiskShadow exited {result.exit_code}"
    except Exception as exc:  # guest operations unavailable, refused login, timeout
        ok, why = False, str(exc)
        outcome["error"] = why
    outcome["truncated"] = ok
    with ctx.db.session() as session:
        point = session.get(RestorePoint, point_id)
        point.details = {**point.details, "truncation": outcome}
    if ok:
        return None
    message = f"Exchange's logs were not truncated after the backup: {why}"
    if mode == "require":
        raise PermanentError(message + " (the restore point is kept)")
    return message
