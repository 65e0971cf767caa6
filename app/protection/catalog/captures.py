"""When each protected thing was captured, mailbox backups included.

An image, snapshot or database backup makes a :class:`RestorePoint`; a mailbox backup makes
one :class:`MailboxRestorePoint` per mailbox, tied to its server (and database) by the job
that made it. The overview's RPO, its history and the verified RPO read both through these
queries, so a server protected only by mailbox backups is not "without a restore point".
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select, union_all
from sqlalchemy.orm import Session

from app.db.models import Job, MailboxRestorePoint, RestorePoint
from app.domain.protection import RestorePointStatus, Verification

Key = tuple[int | None, int | None, int | None]  # policy, server, database


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _mail_verified():
    """The mailbox point's verification column, once mail verify records one (issue 13);
    until then no mailbox point counts as verified."""
    column = getattr(MailboxRestorePoint, "verification", None)
    return None if column is None else column == Verification.VERIFIED


def newest(session: Session, *, verified: bool = False) -> dict[Key, datetime]:
    """Per (policy, server, database): the newest available capture (verified ones only
    with ``verified``)."""
    found: dict[Key, datetime] = {}
    image = (
        select(
            RestorePoint.policy_id,
            RestorePoint.server_id,
            RestorePoint.database_id,
            func.max(RestorePoint.captured_at),
        )
        .where(RestorePoint.status == RestorePointStatus.AVAILABLE)
        .group_by(RestorePoint.policy_id, RestorePoint.server_id, RestorePoint.database_id)
    )
    if verified:
        image = image.where(RestorePoint.verification == Verification.VERIFIED)
    mail_verified = _mail_verified()
    parts = [image]
    if not verified or mail_verified is not None:
        mail = (
            select(
                MailboxRestorePoint.policy_id,
                Job.server_id,
                Job.database_id,
                func.max(MailboxRestorePoint.captured_at),
            )
            .join(Job, Job.id == MailboxRestorePoint.job_id)
            .where(MailboxRestorePoint.status == RestorePointStatus.AVAILABLE)
            .group_by(MailboxRestorePoint.policy_id, Job.server_id, Job.database_id)
        )
        if verified:
            mail = mail.where(mail_verified)
        parts.append(mail)
    # One round trip for both kinds (the overview counts its queries).
    rows = session.execute(union_all(*parts) if len(parts) > 1 else image).all()
    for policy_id, server_id, database_id, at in rows:
        key, at = (policy_id, server_id, database_id), _aware(at)
        if key not in found or found[key] < at:
            found[key] = at
    return found


def first(session: Session) -> dict[Key, datetime]:
    """Per (policy, server, database): the oldest available capture (when its first verify
    falls due)."""
    found: dict[Key, datetime] = {}
    rows = session.execute(
        union_all(
            select(
                RestorePoint.policy_id,
                RestorePoint.server_id,
                RestorePoint.database_id,
                func.min(RestorePoint.captured_at),
            )
            .where(RestorePoint.status == RestorePointStatus.AVAILABLE)
            .group_by(RestorePoint.policy_id, RestorePoint.server_id, RestorePoint.database_id),
            select(
                MailboxRestorePoint.policy_id,
                Job.server_id,
                Job.database_id,
                func.min(MailboxRestorePoint.captured_at),
            )
            .join(Job, Job.id == MailboxRestorePoint.job_id)
            .where(MailboxRestorePoint.status == RestorePointStatus.AVAILABLE)
            .group_by(MailboxRestorePoint.policy_id, Job.server_id, Job.database_id),
        )
    ).all()
    for policy_id, server_id, database_id, at in rows:
        key, at = (policy_id, server_id, database_id), _aware(at)
        if key not in found or at < found[key]:
            found[key] = at
    return found


def every(session: Session, policy_ids: set[int]) -> list[tuple[int | None, int, datetime]]:
    """(server, policy, captured_at) of every capture of these policies, expired ones too
    (they protected for the time they existed), oldest first."""
    rows = session.execute(
        union_all(
            select(RestorePoint.server_id, RestorePoint.policy_id, RestorePoint.captured_at).where(
                RestorePoint.policy_id.in_(policy_ids)
            ),
            select(Job.server_id, MailboxRestorePoint.policy_id, MailboxRestorePoint.captured_at)
            .join(Job, Job.id == MailboxRestorePoint.job_id)
            .where(MailboxRestorePoint.policy_id.in_(policy_ids)),
        )
    ).all()
    return sorted(((s, p, _aware(at)) for s, p, at in rows), key=lambda r: r[2])
