"""The catalog checked against vCenter and the arrays at every inventory sync.

A snapshot deleted outside Bulwark (by an operator in the vSphere client, by the array's own
retention) left a restore point promising what was not there: a revert to it failed after
its retries. Each sync now marks such a copy gone, with when and how it was found, and the
catalog's rule (:func:`app.protection.catalog.mark_gone`) drops what it allowed.

Only what the read could have seen is judged: a copy made after the inventory read began
(less a margin for clocks of other workers) may be missing from it without being gone, and
an array that does not answer proves nothing (its copies wait for the next sync).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.adapters import arrays, vsphere
from app.db.models import Connection, RestorePoint, RestorePointCopy
from app.db.types import utcnow
from app.domain.protection import CopyLocation
from app.protection.bindings.arrays import open_driver
from app.protection.catalog.copies import mark_gone

# Copies younger than the read (less this) are not judged by it.
CLOCK_MARGIN = timedelta(seconds=10)


def _live(session: Session, location: CopyLocation, connection_id: int | None = None):
    query = (
        select(RestorePointCopy)
        .join(RestorePoint, RestorePointCopy.restore_point_id == RestorePoint.id)
        .where(RestorePointCopy.location == location, RestorePointCopy.live)
    )
    if connection_id is not None:
        query = query.where(RestorePointCopy.connection_id == connection_id)
    return session.scalars(query).all()


def _mark(session: Session, missing: list[RestorePointCopy], how: str, now: datetime) -> list[str]:
    by_point: dict[int, list[RestorePointCopy]] = defaultdict(list)
    for copy in missing:
        by_point[copy.restore_point_id].append(copy)
    found = []
    for point_id, copies in sorted(by_point.items()):
        point = session.get(RestorePoint, point_id)
        unavailable = mark_gone(session, point, copies, now=now, how=how)
        for copy in copies:
            found.append(
                f"restore point {point_id}: {copy.location.value} {copy.reference} is gone"
                + (" (the point is unavailable: no copy left)" if unavailable else "")
            )
    return found


def vm_snapshots(
    session: Session, connection_id: int, inventory: vsphere.Inventory, now: datetime | None = None
) -> list[str]:
    """Mark gone every VM snapshot copy of ``connection_id`` that the read does not hold."""
    if inventory.read_started is None:
        return []
    now = now or utcnow()
    present = {m for vm in inventory.vms for m in vm.snapshot_morefs}
    judged_before = inventory.read_started - CLOCK_MARGIN
    missing = [
        c
        for c in _live(session, CopyLocation.VM_SNAPSHOT, connection_id)
        if c.reference not in present and c.created_at < judged_before
    ]
    conn = session.get(Connection, connection_id)
    how = f"not in vCenter '{conn.name}' at the inventory sync of {now:%Y-%m-%d %H:%M} UTC"
    return _mark(session, missing, how, now)


def array_snapshots(session: Session, now: datetime | None = None) -> tuple[list[str], list[str]]:
    """Mark gone every array snapshot copy its array no longer lists: (found, problems)."""
    now = now or utcnow()
    by_array: dict[int, list[RestorePointCopy]] = defaultdict(list)
    for copy in _live(session, CopyLocation.ARRAY_SNAPSHOT):
        if copy.connection_id is not None:
            by_array[copy.connection_id].append(copy)
    found: list[str] = []
    problems: list[str] = []
    for array_id, copies in sorted(by_array.items()):
        conn = session.get(Connection, array_id)
        started = utcnow()
        try:
            present = {s.id for s in open_driver(conn).list_snapshots()}
        except arrays.ArrayError as exc:
            problems.append(f"array '{conn.name}' not checked for gone snapshots: {exc}")
            continue
        judged_before = started - CLOCK_MARGIN
        missing = [c for c in copies if c.reference not in present and c.created_at < judged_before]
        how = f"not listed by array '{conn.name}' at the inventory sync of {now:%Y-%m-%d %H:%M} UTC"
        found += _mark(session, missing, how, now)
    return found, problems
