"""Room in a repository: measured after every backup, checked before one starts.

A repository that fills up mid-backup fails the backup after its snapshot, its quiesce and
most of its copy; one that is nearly full should be seen before that. So a backup does not
start when the repository's free space is below what it is expected to store (what the
target's previous backup stored new; a first backup is not estimated: thin disks make their
provisioned size no guide, and it fails on the full disk with the same words), and every
backup records the repository's capacity and free space, which
the notifier compares with ``repository_full_percent``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import RepositoryUsage, RestorePoint
from app.db.types import utcnow
from app.domain.protection import RestorePointStatus
from app.repository.errors import RepositoryFull


def space(repo: Any) -> tuple[int, int] | None:
    """(capacity, free) of the repository's store, when the store can say (a file system)."""
    measure = getattr(repo.store, "space", None)
    if measure is None:
        return None
    try:
        return measure()
    except OSError:
        return None


def expected_bytes(session: Session, *, policy_id: int, server_id: int, database_id) -> int:
    """What the next backup of this target should store: its previous one's new bytes (0
    for a first backup: not estimated)."""
    details = session.scalar(
        select(RestorePoint.details)
        .where(
            RestorePoint.policy_id == policy_id,
            RestorePoint.server_id == server_id,
            RestorePoint.database_id.is_(None)
            if database_id is None
            else RestorePoint.database_id == database_id,
            RestorePoint.status == RestorePointStatus.AVAILABLE,
        )
        .order_by(RestorePoint.captured_at.desc(), RestorePoint.id.desc())
        .limit(1)
    )
    disks = (details or {}).get("disks") or []
    stored = [int((d.get("stats") or {}).get("stored_bytes", 0)) for d in disks]
    return sum(stored)


def check_room(repo: Any, expected: int) -> None:
    """Refuse to start when the repository cannot hold ``expected`` more bytes."""
    found = space(repo)
    if found is None or expected <= 0:
        return
    capacity, free = found
    if free < expected:
        full = repo.store.full_error()
        raise RepositoryFull(
            f"{full}; this backup is expected to store {expected / 2**20:.0f} MiB, so it was "
            "not started: free space (expire old restore points, or grow the disk)"
        )


def record_space(session: Session, repo: Any) -> RepositoryUsage | None:
    """Note the repository's capacity and free space now (after a backup)."""
    found = space(repo)
    if found is None or repo.id is None:
        return None
    usage = session.get(RepositoryUsage, repo.id) or RepositoryUsage(connection_id=repo.id)
    usage.capacity_bytes, usage.free_bytes = found
    usage.measured_at = utcnow()
    session.add(usage)
    return usage
