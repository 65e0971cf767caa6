"""Mailbox-level backups and the archive.

A message's content is stored once in the repository (``ArchiveMessage.digest``) however
many folders, mailboxes or restore points hold it. Where it was is a ``MailItem``: one
version of a message at a UID in a folder, valid from the backup that first saw it
(``from_seq``) until the backup that saw it gone or changed (``to_seq``). Restore point
``seq`` of a mailbox holds exactly the versions with ``from_seq <= seq < to_seq``; an
unchanged incremental backup writes nothing but its restore point row.

The full-text index (``archive_fts``: FTS5 on SQLite, tsvector + GIN on PostgreSQL) is
created by migration 0005 per dialect and read with SQL in ``app.mailboxes.archive``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.db.types import StrEnumType, UTCDateTime, utcnow
from app.domain.protection import RestorePointStatus, Verification

FTS_TABLE = "archive_fts"


def is_migration_only(name: str | None) -> bool:
    """Objects the migration makes per dialect without a model: the full-text index (and
    the FTS5 shadow tables SQLite keeps for it). Model/migration comparisons skip them."""
    return (name or "").startswith(FTS_TABLE)


class Mailbox(Base):
    """A user's mailbox on a mail connection, as Bulwark has backed it up."""

    __tablename__ = "mailboxes"
    __table_args__ = (UniqueConstraint("connection_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    policy_id: Mapped[int | None] = mapped_column(ForeignKey("policies.id", ondelete="SET NULL"))
    # Number of the newest backup; restore points are numbered 1, 2, … per mailbox.
    backup_seq: Mapped[int] = mapped_column(default=0)
    last_backup_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The policy's compliance retention at the last backup: mail gone from the server stays
    # in the archive this long.
    compliance_retention_days: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MailFolder(Base):
    __tablename__ = "mail_folders"
    __table_args__ = (UniqueConstraint("mailbox_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(512))
    delimiter: Mapped[str] = mapped_column(String(4), default="/")
    # What the last backup reached: incremental state per folder.
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    highest_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    highestmodseq: Mapped[int | None] = mapped_column(BigInteger)
    uidnext: Mapped[int] = mapped_column(BigInteger, default=0)
    message_count: Mapped[int] = mapped_column(default=0)
    gone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MailboxRestorePoint(Base):
    """One backup of a mailbox: the mailbox as it was at ``captured_at``."""

    __tablename__ = "mailbox_restore_points"
    __table_args__ = (UniqueConstraint("mailbox_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    seq: Mapped[int]
    repository_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="RESTRICT"))
    policy_id: Mapped[int | None] = mapped_column(ForeignKey("policies.id", ondelete="SET NULL"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    captured_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    status: Mapped[RestorePointStatus] = mapped_column(
        StrEnumType(RestorePointStatus), default=RestorePointStatus.AVAILABLE
    )
    message_count: Mapped[int] = mapped_column(default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    new_messages: Mapped[int] = mapped_column(default=0)
    retain_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # A verify job's last word (all or a sample of the messages re-read and re-hashed); a
    # backup that could not get lost messages back says damaged too.
    verification: Mapped[Verification] = mapped_column(
        StrEnumType(Verification), default=Verification.UNVERIFIED, server_default="unverified"
    )
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ArchiveMessage(Base):
    """One distinct message (by content hash) in a repository, with what the catalog shows."""

    __tablename__ = "archive_messages"
    __table_args__ = (UniqueConstraint("repository_id", "digest"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="RESTRICT"))
    digest: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[str | None] = mapped_column(String(512), index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    sender: Mapped[str] = mapped_column(Text, default="")
    recipients: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    attachments: Mapped[list[str]] = mapped_column(JSON, default=list)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set once the headers and text are in the catalog and the full-text index.
    indexed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class MailItem(Base):
    """A message at a UID in a folder, with its flags, over a range of backups."""

    __tablename__ = "mail_items"
    __table_args__ = (Index("ix_mail_items_folder_open", "folder_id", "to_seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("mail_folders.id", ondelete="CASCADE"))
    archive_message_id: Mapped[int] = mapped_column(
        ForeignKey("archive_messages.id", ondelete="RESTRICT"), index=True
    )
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    internal_date: Mapped[datetime] = mapped_column(UTCDateTime)
    from_seq: Mapped[int]
    to_seq: Mapped[int | None]
    # When the backup saw the message gone from the folder (not merely re-flagged): compliance
    # retention counts from here.
    gone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
