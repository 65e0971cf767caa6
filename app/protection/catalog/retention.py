"""Retention on primary storage: the catalog's one rule for how many copies a policy keeps
there (VM snapshots in vCenter, snapshots on an array), for every method that keeps some.

Legal holds and compliance retention are decided here, once: they protect a restore point's
*data*, so they keep a copy on primary storage only while it is the point's last live copy.
A point that also has a copy in a repository loses its snapshot like any other (it stays
restorable from the repository, no longer instantly); one whose snapshot is all it has keeps
it until the hold is released and the retention date has passed.

Who removes the copy is the strategy's business (a remover per copy location, see
``BackupStrategy.remove_from_primary``): this module decides which, and writes the catalog.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.db.models import RestorePoint, RestorePointCopy
from app.db.types import utcnow
from app.domain.protection import CopyLocation, RestorePointStatus
from app.domain.retention import removal_blocker
from app.protection.catalog.copies import retire_copies
from app.protection.catalog.holds import holds_by_point
from app.protection.catalog.points import NEWEST_FIRST
from app.strategies.base import PrimaryCopy

# How the audit record words each location (the reason, and the detail naming the copy).
_WORDS = {
    CopyLocation.VM_SNAPSHOT: ("on primary", "snapshot"),
    CopyLocation.ARRAY_SNAPSHOT: ("on the array", "array_snapshot"),
}


def retain_on_primary(
    db,
    *,
    policy_id: int,
    server_id: int,
    database_id: int | None,
    location: CopyLocation,
    keep: int,
    remove: Callable[[PrimaryCopy], bool],
) -> list[int]:
    """Keep the newest ``keep`` (at least one: the next backup may build on it) restore
    points of this policy and target that still have a live copy at ``location``; take that
    copy away from the older ones, unless it is the last copy of a point under a hold or
    compliance retention. ``remove`` removes it outside and says False for a copy it must
    never touch (one Bulwark did not make). Returns the points that lost their copy."""
    keep = max(1, keep)
    with db.session() as session:
        # Only the points past the newest ``keep`` that still have a live copy there, with
        # their copies: usually none, so one query (a long history whose snapshots are gone
        # is never loaded).
        there = (
            select(RestorePointCopy.id)
            .where(
                RestorePointCopy.restore_point_id == RestorePoint.id,
                RestorePointCopy.location == location,
                RestorePointCopy.live,
            )
            .exists()
        )
        candidates = session.scalars(
            select(RestorePoint)
            .where(
                RestorePoint.policy_id == policy_id,
                RestorePoint.server_id == server_id,
                RestorePoint.database_id.is_(None)
                if database_id is None
                else RestorePoint.database_id == database_id,
                RestorePoint.status == RestorePointStatus.AVAILABLE,
                there,
            )
            .order_by(*NEWEST_FIRST)
            .offset(keep)
            .options(selectinload(RestorePoint.copies))
        ).all()
        if not candidates:
            return []
        holds = holds_by_point(session, candidates)
        where, detail = _WORDS.get(location, ("on primary", location.value))
        now, removed = utcnow(), []
        for point in candidates:
            copy = point.live_copy(location)
            last = len(point.live_copies()) == 1
            if last and removal_blocker(now, point.retain_until, holds[point.id]):
                continue
            found = PrimaryCopy(point.id, copy.reference, copy.connection_id, point.details or {})
            if not remove(found):
                continue
            # Without other copies the point expires; with a repository copy it stays
            # restorable from there, no longer instantly.
            retire_copies(
                session,
                point,
                [copy],
                now=now,
                reason=f"keep {keep} {where}",
                **{detail: copy.reference},
            )
            # The copy is gone: say so now, not after the rest (a later failure must not roll
            # the catalog back to offering it).
            session.commit()
            removed.append(point.id)
        return removed
