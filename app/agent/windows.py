"""Exchange on a Windows server: PowerShell, DiskShadow and eseutil (see docs/agent.md).

This cannot run on the project's machine (no Windows guest, no Exchange, no VSS); the tests
use app/agent/standin.py through the same interface. Each method names the commands it runs,
as docs/agent.md lists them, so the two stay readable side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from app.agent.exchange import DatabaseCopy, DatabaseInfo, ExchangeError

EXCHANGE_WRITER = "{76fe1ac4-15f7-4bcd-987e-8e1acb462fb7}"
SNAPIN = "Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn;"


def _powershell(script: str, timeout: float = 300) -> Any:
    done = subprocess.run(
        ["powershell.exe", "-NoProfile", "-NonInteractive", "-Command", SNAPIN + script],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise ExchangeError(done.stderr.strip() or f"PowerShell exited {done.returncode}")
    return json.loads(done.stdout) if done.stdout.strip() else None


def _run(args: list[str], timeout: float = 3600) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise ExchangeError(f"{args[0]} failed ({done.returncode}): {done.stdout[-2000:]}")
    return done.stdout


class WindowsExchange:
    """The agent's Exchange interface on a real server. Only the inventory and the simple
    calls are written out; backup and restore follow docs/agent.md step by step."""

    def __init__(self) -> None:
        if os.name != "nt":
            raise ExchangeError(
                "the Windows Exchange implementation runs only on Windows; use "
                "--exchange standin:<path> for the stand-in"
            )

    def databases(self) -> list[DatabaseInfo]:
        rows = _powershell(
            "Get-MailboxDatabase -Server $env:COMPUTERNAME -Status | Select-Object Name,Guid,"
            "EdbFilePath,LogFolderPath,Mounted,CircularLoggingEnabled,"
            "MasterServerOrAvailabilityGroup | ConvertTo-Json -Depth 3"
        )
        result = []
        for row in rows if isinstance(rows, list) else [rows]:
            copies = _powershell(
                f"Get-MailboxDatabaseCopyStatus -Identity '{row['Name']}\\*' | Select-Object "
                "MailboxServer,Status,ActiveCopy,CopyQueueLength,ReplayQueueLength | "
                "ConvertTo-Json"
            )
            copies = copies if isinstance(copies, list) else [copies] if copies else []
            log = Path(str(row["LogFolderPath"]))
            import shutil

            usage = shutil.disk_usage(log.anchor or str(log))
            result.append(
                DatabaseInfo(
                    name=row["Name"],
                    guid=str(row["Guid"]),
                    mounted=bool(row["Mounted"]),
                    circular_logging=bool(row["CircularLoggingEnabled"]),
                    log_generations=None,
                    log_disk_free=usage.free,
                    log_disk_total=usage.total,
                    copies=[
                        DatabaseCopy(
                            server=c["MailboxServer"],
                            active=bool(c["ActiveCopy"]),
                            healthy=c["Status"] in ("Healthy", "Mounted"),
                            copy_queue=int(c["CopyQueueLength"] or 0),
                            replay_queue=int(c["ReplayQueueLength"] or 0),
                        )
                        for c in copies
                    ],
                    dag=str(row.get("MasterServerOrAvailabilityGroup") or "") or None,
                )
            )
        return result

    def dismount(self, database: str) -> None:
        _powershell(f"Dismount-Database -Identity '{database}' -Confirm:$false")

    def mount(self, database: str) -> None:
        _powershell(f"Mount-Database -Identity '{database}'")

    def __getattr__(self, name: str):
        # snapshot, check, release, complete_backup, restore_path, recover, finish_restore:
        # DiskShadow sessions and eseutil as docs/agent.md lists them, not written yet.
        raise ExchangeError(f"{name} is not implemented for Windows in this version")
