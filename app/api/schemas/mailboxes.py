"""Request and response bodies for mailboxes, mail restores and the archive."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from app.api.schemas.common import Input, LongText, Output

MailboxName = str


class MailboxOut(Output):
    id: int
    connection_id: int
    name: str
    policy_id: int | None
    backup_seq: int
    last_backup_at: datetime | None
    compliance_retention_days: int | None


class MailboxRestorePointOut(Output):
    id: int
    mailbox_id: int
    seq: int
    repository_id: int
    policy_id: int | None
    job_id: int | None
    captured_at: datetime
    status: str
    message_count: int
    size_bytes: int
    new_messages: int
    retain_until: datetime | None
    details: dict
    verification: str
    verified_at: datetime | None


class FolderOut(Output):
    name: str
    messages: int


class MessageOut(Output):
    """A message as a restore point holds it (``id`` is its archive id)."""

    id: int
    folder: str
    uid: int
    flags: list[str]
    internal_date: datetime
    size: int
    subject: str
    sender: str
    sent_at: datetime | None


class Destination(Input):
    mailbox: str | None = Field(
        default=None, min_length=1, max_length=255, description="Default: the source mailbox"
    )
    where: Literal["original", "recovered", "folder"] = "original"
    folder: str | None = Field(default=None, min_length=1, max_length=512)

    @model_validator(mode="after")
    def _folder_when_named(self):
        if self.where == "folder" and not self.folder:
            raise ValueError("where='folder' needs folder")
        return self


class MailRestoreCreate(Input):
    """What to restore from a mailbox restore point: everything, some folders, or some
    messages (archive ids); and where to."""

    folders: list[str] | None = Field(default=None, max_length=1000)
    message_ids: list[int] | None = Field(default=None, max_length=100_000)
    destination: Destination = Field(default_factory=Destination)


class ArchiveRestoreCreate(Input):
    message_ids: list[int] = Field(min_length=1, max_length=100_000)
    destination: Destination = Field(default_factory=Destination)


class JobQueued(Output):
    job_id: int


class PlaceOut(Output):
    mailbox_id: int
    mailbox: str
    folder: str
    uid: int
    on_server: bool
    gone_at: datetime | None


class HitOut(Output):
    id: int
    subject: str
    sender: str
    recipients: str
    sent_at: datetime | None
    size: int
    attachments: list[str]
    snippet_html: str
    on_server: bool
    places: list[PlaceOut]


class SearchOut(Output):
    total: int
    limit: int
    offset: int
    items: list[HitOut]


class SearchHoldCreate(Input):
    name: str = Field(min_length=1, max_length=128)
    reason: LongText = Field(min_length=1)
    terms: str = Field(default="", max_length=500)
    people: str = Field(default="", max_length=255)
    mailbox: str = Field(default="", max_length=255)
    sent_from: datetime | None = None
    sent_to: datetime | None = None
