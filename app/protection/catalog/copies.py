"""The catalog's one rule for taking copies of a restore point away (retention, expiry)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.audit import SYSTEM, record
from app.db.models import RestorePoint, RestorePointCopy
from app.domain.protection import CopyLocation, RestorePointStatus
from app.strategies.declarations import DECLARATIONS

# Copies on primary storage: while one is kept, the restore point allows instant recovery.
PRIMARY = frozenset({CopyLocation.VM_SNAPSHOT, CopyLocation.ARRAY_SNAPSHOT})


def retire_copies(
    session: Session,
    point: RestorePoint,
    copies: Iterable[RestorePointCopy],
    *,
    now: datetime,
    reason: str,
    **detail: Any,
) -> None:
    """Mark ``copies`` removed (the caller removed them outside). The restore point expires
    with its last copy; with copies left only off primary storage it loses the restores that
    needed one there. Audited as ``restore_point.expire``."""
    for copy in copies:
        copy.removed_at = now
    if not _drop_capabilities(point):
        point.status = RestorePointStatus.EXPIRED
        point.expires_at = now
    record(
        session, SYSTEM, "restore_point.expire", "restore_point", point.id, reason=reason, **detail
    )


def mark_gone(
    session: Session,
    point: RestorePoint,
    copies: Iterable[RestorePointCopy],
    *,
    now: datetime,
    how: str,
) -> bool:
    """Mark ``copies`` gone: found missing where they lived, removed by someone else. The
    restore point loses the restores they allowed; left with no copy it is unavailable (not
    expired: nobody decided it, and the operator is told). Audited as
    ``restore_point.copy_gone``; True when the point became unavailable."""
    gone = list(copies)
    for copy in gone:
        copy.removed_at = copy.gone_at = now
        copy.gone_reason = how
    unavailable = not _drop_capabilities(point)
    if unavailable:
        point.status = RestorePointStatus.UNAVAILABLE
        point.capabilities = []
    record(
        session,
        SYSTEM,
        "restore_point.copy_gone",
        "restore_point",
        point.id,
        copies=[f"{c.location.value} {c.reference}" for c in gone],
        how=how,
        unavailable=unavailable,
    )
    return unavailable


def _drop_capabilities(point: RestorePoint) -> bool:
    """Drop the restores that needed a copy on primary storage if none is left there;
    False when no copy at all is left."""
    left = point.live_copies()
    if left and not any(c.location in PRIMARY for c in left):
        primary_only = {c.value for c in DECLARATIONS[point.method].restores_from_primary}
        point.capabilities = [c for c in point.capabilities if c not in primary_only]
    return bool(left)
