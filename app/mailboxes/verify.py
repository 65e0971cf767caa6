"""Verifying mailbox restore points: every message (or a random share) read back from the
repository and checked against its hash; the point is then verified or damaged.

Damage does not make a mailbox point unusable: it still gives back every other message, so
``status`` stays available and ``verification`` says damaged, with the damaged messages
listed in ``details.verification``. The next backup fetches from the server again what the
repository lost (app/mailboxes/backup.py), and the next verify then finds the point whole.
"""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.db.models import ArchiveMessage, MailboxRestorePoint, MailFolder, MailItem
from app.db.types import utcnow
from app.domain.protection import RestorePointStatus, Verification
from app.repository import ChunkDamaged, Repository

MAX_LISTED = 50


@dataclass
class MailboxVerification:
    restore_point_id: int
    ok: bool
    messages_checked: int
    damaged: list[dict] = field(default_factory=list)


def _point_messages(session: Session, point: MailboxRestorePoint) -> dict[str, int]:
    """Digest -> archive id of every message the point holds."""
    rows = session.execute(
        select(ArchiveMessage.digest, ArchiveMessage.id)
        .join(MailItem, MailItem.archive_message_id == ArchiveMessage.id)
        .join(MailFolder, MailFolder.id == MailItem.folder_id)
        .where(
            MailFolder.mailbox_id == point.mailbox_id,
            MailItem.from_seq <= point.seq,
            or_(MailItem.to_seq.is_(None), MailItem.to_seq > point.seq),
        )
    ).all()
    return dict(rows)


def verify_mailbox_point(
    session: Session,
    repo: Repository,
    point: MailboxRestorePoint,
    *,
    sample: float = 1.0,
    now: datetime | None = None,
) -> MailboxVerification:
    """Re-read the point's messages (all, or a random share) and record the outcome."""
    now = now or utcnow()
    messages = _point_messages(session, point)
    digests = sorted(messages)
    if sample < 1.0 and digests:
        digests = secrets.SystemRandom().sample(digests, max(1, round(len(digests) * sample)))

    def check(digest: str) -> dict | None:
        try:
            repo.get_chunk(digest)
        except ChunkDamaged as exc:
            return {"message": messages[digest], "digest": digest, "reason": exc.reason}
        return None

    repo.packs.refresh()  # packs written or rebuilt since this handle read the indexes
    with ThreadPoolExecutor(2, thread_name_prefix="mail-verify") as pool:
        damaged = [d for d in pool.map(check, digests) if d is not None]
    result = MailboxVerification(point.id, not damaged, len(digests), damaged)
    _record(point, result, sample, now)
    return result


def _record(point: MailboxRestorePoint, result: MailboxVerification, sample, now) -> None:
    point.verified_at = now
    point.verification = Verification.VERIFIED if result.ok else Verification.DAMAGED
    point.details = {
        **(point.details or {}),
        "verification": {
            "at": now.isoformat(),
            "sample": sample,
            "messages_checked": result.messages_checked,
            "damaged_messages": result.damaged[:MAX_LISTED],
            "damaged_count": len(result.damaged),
        },
    }


def mark_lost(session: Session, repo: Repository, repository_id: int) -> list[int]:
    """After damage was found in the repository (garbage collection rebuilt a cut pack):
    every available mailbox point holding a message the repository no longer has is marked
    damaged. Returns their ids."""
    rows = session.execute(
        select(ArchiveMessage.digest, ArchiveMessage.id).where(
            ArchiveMessage.repository_id == repository_id
        )
    ).all()
    repo.packs.refresh()
    gone = repo.missing_chunks({d for d, _i in rows})
    if not gone:
        return []
    points = session.scalars(
        select(MailboxRestorePoint).where(
            MailboxRestorePoint.repository_id == repository_id,
            MailboxRestorePoint.status == RestorePointStatus.AVAILABLE,
        )
    ).all()
    now, marked = utcnow(), []
    for point in points:
        holds = _point_messages(session, point)
        damaged = [
            {"message": holds[d], "digest": d, "reason": "missing from the repository"}
            for d in gone
            if d in holds
        ]
        if damaged:
            result = MailboxVerification(point.id, False, len(holds), damaged)
            _record(point, result, 1.0, now)
            marked.append(point.id)
    return marked
