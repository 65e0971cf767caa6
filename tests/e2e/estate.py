"""A small, believable estate for the browser tests: what the inventory sync, the scheduler
and the workers would have written. Inserted with the service's own models."""

from __future__ import annotations

from datetime import timedelta

from app.db.models import (
    Connection,
    ExchangeDatabase,
    ExchangeServer,
    Job,
    JobEvent,
    Proxy,
    RestorePoint,
)
from app.db.session import Database
from app.db.types import utcnow
from app.domain.connections import ConnectionKind, ConnectionStatus
from app.domain.jobs import EventLevel, JobKind, JobState
from app.domain.protection import (
    Consistency,
    DatabaseLayout,
    ProtectionMethod,
    RestoreCapability,
    Verification,
)


def seed_estate(database_url: str) -> dict[str, int]:
    now = utcnow()
    db = Database(database_url)
    try:
        with db.session() as s:
            vc = Connection(
                name="vc-prod",
                kind=ConnectionKind.VCENTER,
                host="vcenter.corp.example",
                port=443,
                username="svc-bulwark@vsphere.local",
                status=ConnectionStatus.OK,
                last_checked_at=now - timedelta(minutes=3),
            )
            array = Connection(
                name="array-a",
                kind=ConnectionKind.ARRAY,
                host="array-a.corp.example",
                options={"driver": "btrfs"},
                status=ConnectionStatus.FAILED,
                last_checked_at=now - timedelta(minutes=9),
                last_error="connection refused (port 8443)",
            )
            repo = Connection(
                name="repo-san",
                kind=ConnectionKind.REPOSITORY,
                options={"path": "/srv/bulwark/repo"},
                status=ConnectionStatus.OK,
                last_checked_at=now - timedelta(minutes=1),
            )
            s.add_all([vc, array, repo])
            s.flush()
            mbx1 = ExchangeServer(name="EXCH-MBX01", connection_id=vc.id, vm_moref="vm-101")
            mbx1.databases = [
                ExchangeDatabase(name="DB01", layout=DatabaseLayout.VMDK, database_disk_key=2001),
                ExchangeDatabase(
                    name="DB02", layout=DatabaseLayout.RDM_PHYSICAL, database_disk_key=2002
                ),
            ]
            mbx2 = ExchangeServer(name="EXCH-MBX02", connection_id=vc.id, vm_moref="vm-102")
            mbx2.databases = [
                ExchangeDatabase(
                    name="DB03", layout=DatabaseLayout.RDM_VIRTUAL, database_disk_key=2001
                )
            ]
            s.add_all([mbx1, mbx2])
            s.add(
                Proxy(
                    name="proxy-01",
                    hostname="bulwark-proxy-01",
                    capabilities=["vsphere", "repository:repo-san"],
                    last_heartbeat_at=now - timedelta(seconds=20),
                )
            )
            s.add(
                Proxy(
                    name="proxy-02",
                    hostname="bulwark-proxy-02",
                    capabilities=["array:array-a"],
                    last_heartbeat_at=now - timedelta(hours=2),
                )
            )
            s.flush()
            jobs = [
                Job(
                    kind=JobKind.BACKUP,
                    state=JobState.RUNNING,
                    server_id=mbx1.id,
                    progress_percent=42.0,
                    current_step="copy",
                    worker_name="proxy-01",
                    bytes_done=21 << 30,
                    bytes_total=50 << 30,
                    created_at=now - timedelta(minutes=6),
                    started_at=now - timedelta(minutes=5),
                ),
                Job(
                    kind=JobKind.VERIFY,
                    state=JobState.QUEUED,
                    server_id=mbx2.id,
                    created_at=now - timedelta(minutes=2),
                ),
                Job(
                    kind=JobKind.BACKUP,
                    state=JobState.SUCCEEDED,
                    server_id=mbx2.id,
                    worker_name="proxy-01",
                    progress_percent=100.0,
                    created_at=now - timedelta(hours=3),
                    started_at=now - timedelta(hours=3),
                    finished_at=now - timedelta(hours=2, minutes=41),
                ),
                Job(
                    kind=JobKind.SYNC,
                    state=JobState.FAILED,
                    worker_name="proxy-02",
                    error="array-a: connection refused",
                    created_at=now - timedelta(hours=5),
                    started_at=now - timedelta(hours=5),
                    finished_at=now - timedelta(hours=5) + timedelta(seconds=12),
                ),
            ]
            s.add_all(jobs)
            s.flush()
            s.add_all(
                [
                    JobEvent(job_id=jobs[0].id, step="snapshot", message="VM snapshot taken"),
                    JobEvent(job_id=jobs[0].id, step="copy", message="copying disk 1 of 2"),
                    JobEvent(
                        job_id=jobs[3].id,
                        level=EventLevel.ERROR,
                        step="connect",
                        message="connection refused",
                    ),
                ]
            )
            for hours, verification in ((3, Verification.VERIFIED), (27, Verification.UNVERIFIED)):
                s.add(
                    RestorePoint(
                        server_id=mbx2.id,
                        database_id=mbx2.databases[0].id,
                        job_id=jobs[2].id,
                        captured_at=now - timedelta(hours=hours),
                        method=ProtectionMethod.VMFS_SNAPSHOT,
                        consistency=Consistency.HOT_CRASH_SCRIPTED,
                        capabilities=[RestoreCapability.WHOLE_DATABASE.value],
                        size_bytes=38 << 30,
                        verification=verification,
                    )
                )
            return {
                "vcenter": vc.id,
                "repository": repo.id,
                "mbx1": mbx1.id,
                "mbx2": mbx2.id,
                "running_job": jobs[0].id,
            }
    finally:
        db.dispose()
