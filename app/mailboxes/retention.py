"""Expiry of mailbox restore points and archived mail, and what forbids it.

- A mailbox keeps its newest ``keep_last`` restore points (the policy's), and every restore
  point younger than its compliance retention (``retain_until``).
- A legal hold on a mailbox blocks every expiry in it; a legal hold on an archive search
  keeps every message the search finds. Holds win over everything.
- Mail deleted on the server stays in the archive (findable and restorable) until the
  compliance retention counted from when the backup saw it gone has passed.
- A message leaves the repository only when no restore point, no retention and no hold
  needs it; its chunk is then removed by the repository's garbage collection.

Every expiry is audited.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session, aliased

from app.audit import SYSTEM, Actor, record
from app.db.models import (
    ArchiveMessage,
    LegalHold,
    Mailbox,
    MailboxRestorePoint,
    MailFolder,
    MailItem,
    Policy,
)
from app.db.types import utcnow
from app.domain.protection import RestorePointStatus
from app.domain.retention import removal_blocker
from app.mailboxes import archive

DEFAULT_KEEP_LAST = 7


def search_of(hold: LegalHold) -> archive.SearchQuery:
    """A search hold's query: the archive page stores JSON; plain text means terms."""
    text = (hold.search_query or "").strip()
    if text.startswith("{"):
        try:
            return archive.SearchQuery.from_dict(json.loads(text))
        except (ValueError, TypeError):
            pass
    return archive.SearchQuery(terms=text)


def active_holds(session: Session) -> list[LegalHold]:
    return list(
        session.scalars(
            select(LegalHold).where(
                LegalHold.released_at.is_(None), LegalHold.scope.in_(("mailbox", "search"))
            )
        )
    )


def mailbox_holds(holds: list[LegalHold]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for h in holds:
        if h.scope == "mailbox" and h.mailbox:
            out[h.mailbox].append(h.name)
    return out


def held_messages(session: Session, holds: list[LegalHold]) -> dict[int, list[str]]:
    """Archive ids kept by search holds (and by mailbox holds), with the holds' names."""
    out: dict[int, list[str]] = defaultdict(list)
    for h in holds:
        if h.scope == "search":
            for mid in archive.matching_ids(session, search_of(h)):
                out[mid].append(h.name)
        elif h.scope == "mailbox" and h.mailbox:
            ids = session.scalars(
                select(MailItem.archive_message_id)
                .join(MailFolder, MailFolder.id == MailItem.folder_id)
                .join(Mailbox, Mailbox.id == MailFolder.mailbox_id)
                .where(Mailbox.name == h.mailbox)
                .distinct()
            )
            for mid in ids:
                out[mid].append(h.name)
    return out


@dataclass
class ExpiryOutcome:
    expired_points: list[int] = field(default_factory=list)
    kept_points: dict[int, str] = field(default_factory=dict)  # id -> why
    removed_items: int = 0
    removed_messages: int = 0
    held_messages: int = 0


def expire(
    session: Session, *, now: datetime | None = None, actor: Actor = SYSTEM
) -> ExpiryOutcome:
    now = now or utcnow()
    out = ExpiryOutcome()
    holds = active_holds(session)
    by_mailbox = mailbox_holds(holds)
    held = held_messages(session, holds)
    out.held_messages = len(held)

    keep_last = dict(session.execute(select(Policy.id, Policy.keep_last)).all())
    for mbx in session.scalars(select(Mailbox)):
        points = session.scalars(
            select(MailboxRestorePoint)
            .where(
                MailboxRestorePoint.mailbox_id == mbx.id,
                MailboxRestorePoint.status == RestorePointStatus.AVAILABLE,
            )
            .order_by(MailboxRestorePoint.seq.desc())
        ).all()
        keep = max(1, keep_last.get(mbx.policy_id, DEFAULT_KEEP_LAST) or DEFAULT_KEEP_LAST)
        for point in points[keep:]:
            blocker = removal_blocker(now, point.retain_until, by_mailbox.get(mbx.name, []))
            if blocker:
                out.kept_points[point.id] = blocker
                continue
            point.status = RestorePointStatus.EXPIRED
            point.expired_at = now
            out.expired_points.append(point.id)
            record(
                session,
                actor,
                "mailbox_restore_point.expire",
                "mailbox_restore_point",
                point.id,
                mailbox=mbx.name,
                seq=point.seq,
                reason=f"beyond the newest {keep}",
            )
    session.flush()
    out.removed_items = _remove_unneeded_items(session, now, by_mailbox, held)
    out.removed_messages = _remove_unreferenced_messages(session, held, actor)
    return out


def _remove_unneeded_items(
    session: Session, now: datetime, by_mailbox: dict[str, list[str]], held: dict[int, list[str]]
) -> int:
    """Delete placements no available restore point covers and no retention or hold keeps."""
    point = aliased(MailboxRestorePoint)
    covered = exists(
        select(point.id).where(
            point.mailbox_id == MailFolder.mailbox_id,
            point.status == RestorePointStatus.AVAILABLE,
            point.seq >= MailItem.from_seq,
            point.seq < MailItem.to_seq,
        )
    )
    candidates = session.execute(
        select(MailItem.id, MailItem.archive_message_id, MailItem.gone_at, Mailbox)
        .join(MailFolder, MailFolder.id == MailItem.folder_id)
        .join(Mailbox, Mailbox.id == MailFolder.mailbox_id)
        .where(MailItem.to_seq.is_not(None), ~covered)
    ).all()
    doomed = []
    for item_id, archive_id, gone_at, mbx in candidates:
        if mbx.name in by_mailbox or archive_id in held:
            continue
        days = mbx.compliance_retention_days
        if gone_at is not None and days and gone_at + timedelta(days=days) > now:
            continue  # deleted on the server, but still within compliance retention
        doomed.append(item_id)
    for start in range(0, len(doomed), 500):
        session.execute(delete(MailItem).where(MailItem.id.in_(doomed[start : start + 500])))
    return len(doomed)


def _remove_unreferenced_messages(
    session: Session, held: dict[int, list[str]], actor: Actor
) -> int:
    orphans = session.execute(
        select(ArchiveMessage.id, ArchiveMessage.repository_id, ArchiveMessage.digest).where(
            ~exists(select(MailItem.id).where(MailItem.archive_message_id == ArchiveMessage.id))
        )
    ).all()
    doomed = [row for row in orphans if row[0] not in held]
    ids = [row[0] for row in doomed]
    archive.unindex(session, ids)
    for start in range(0, len(ids), 500):
        session.execute(
            delete(ArchiveMessage).where(ArchiveMessage.id.in_(ids[start : start + 500]))
        )
    if ids:
        record(
            session,
            actor,
            "archive.expire",
            "archive",
            None,
            messages=len(ids),
            repositories=sorted({row[1] for row in doomed}),
        )
    return len(ids)
