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
    left = [c for c in point.copies if c.removed_at is None]
    if not left:
        point.status = RestorePointStatus.EXPIRED
        point.expires_at = now
    elif not any(c.location in PRIMARY for c in left):
        primary_only = {c.value for c in DECLARATIONS[point.method].restores_from_primary}
        point.capabilities = [c for c in point.capabilities if c not in primary_only]
    record(
        session, SYSTEM, "restore_point.expire", "restore_point", point.id, reason=reason, **detail
    )
