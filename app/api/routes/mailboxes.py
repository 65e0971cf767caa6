"""Mailboxes, their restore points, and mail restores and exports from them."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import func, select

from app.api import API_PREFIX
from app.api.deps import DbSession, Reader, require
from app.api.mail import exporter, queue_mail_restore, stream_export
from app.api.pagination import Page, PageWindow, paginate
from app.api.problems import Problem, found, invalid, not_found
from app.api.schemas.mailboxes import (
    FolderOut,
    JobQueued,
    MailboxOut,
    MailboxRestorePointOut,
    MailRestoreCreate,
    MessageOut,
)
from app.audit import record
from app.db.models import Mailbox, MailboxRestorePoint
from app.mailboxes import restore as mrestore
from app.security.roles import Permission

router = APIRouter(prefix=API_PREFIX, tags=["mailboxes"])
Restorer = require(Permission.RUN_RESTORE)
SORTABLE = {
    "name": Mailbox.name,
    "last_backup_at": Mailbox.last_backup_at,
    "created_at": Mailbox.created_at,
}


def _point(session, point_id: int) -> MailboxRestorePoint:
    return found(session.get(MailboxRestorePoint, point_id), "mailbox restore point", point_id)


def _available(session, point_id: int) -> MailboxRestorePoint:
    try:
        return mrestore.restore_point(session, point_id)
    except LookupError:
        raise not_found("mailbox restore point", point_id) from None
    except mrestore.NothingToRestore as exc:
        raise Problem(409, str(exc), type_="/problems/conflict") from exc


@router.get("/mailboxes", response_model=Page[MailboxOut], summary="List backed-up mailboxes")
def list_mailboxes(
    session: DbSession,
    _: Reader,
    connection_id: int | None = None,
    q: str | None = Query(default=None, max_length=64, description="Name contains"),
    sort: str | None = Query(default=None, description="name, last_backup_at; '-' desc"),
    window: PageWindow = Depends(),
):
    query = select(Mailbox)
    if connection_id is not None:
        query = query.where(Mailbox.connection_id == connection_id)
    if q:
        query = query.where(Mailbox.name.contains(q, autoescape=True))
    return paginate(session, query, window, sort, sortable=SORTABLE, default_sort="name")


@router.get("/mailboxes/{mailbox_id}", response_model=MailboxOut, summary="Read a mailbox")
def read_mailbox(mailbox_id: int, session: DbSession, _: Reader):
    return found(session.get(Mailbox, mailbox_id), "mailbox", mailbox_id)


@router.get(
    "/mailboxes/{mailbox_id}/restore-points",
    response_model=Page[MailboxRestorePointOut],
    summary="A mailbox's restore points, newest first",
)
def list_points(mailbox_id: int, session: DbSession, _: Reader, window: PageWindow = Depends()):
    read_mailbox(mailbox_id, session, _)
    query = select(MailboxRestorePoint).where(MailboxRestorePoint.mailbox_id == mailbox_id)
    return paginate(
        session,
        query,
        window,
        None,
        sortable={"seq": MailboxRestorePoint.seq},
        default_sort="-seq",
    )


@router.get(
    "/mailbox-restore-points/{point_id}",
    response_model=MailboxRestorePointOut,
    summary="Read a mailbox restore point",
)
def read_point(point_id: int, session: DbSession, _: Reader):
    return _point(session, point_id)


@router.get(
    "/mailbox-restore-points/{point_id}/folders",
    response_model=list[FolderOut],
    summary="Folders of the mailbox as of the restore point",
)
def point_folders(point_id: int, session: DbSession, _: Reader):
    point = _point(session, point_id)
    return [FolderOut(name=n, messages=c) for n, c in mrestore.folders_in(session, point)]


@router.get(
    "/mailbox-restore-points/{point_id}/messages",
    response_model=list[MessageOut],
    summary="Messages of the restore point (optionally of one folder)",
)
def point_messages(
    point_id: int,
    session: DbSession,
    _: Reader,
    folder: str | None = Query(default=None, max_length=512),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0),
):
    from app.db.models import ArchiveMessage

    point = _point(session, point_id)
    items = mrestore.items_in(
        session, point, folders=[folder] if folder else None, limit=limit, offset=offset
    )
    heads = {
        a.id: a
        for a in session.scalars(
            select(ArchiveMessage).where(ArchiveMessage.id.in_([i.archive_id for i in items]))
        )
    }
    return [
        MessageOut(
            id=i.archive_id,
            folder=i.folder,
            uid=i.uid,
            flags=list(i.flags),
            internal_date=i.internal_date,
            size=i.size,
            subject=heads[i.archive_id].subject,
            sender=heads[i.archive_id].sender,
            sent_at=heads[i.archive_id].sent_at,
        )
        for i in items
    ]


@router.post(
    "/mailbox-restore-points/{point_id}/restore",
    response_model=JobQueued,
    status_code=202,
    summary="Restore messages, folders or the whole mailbox as of this restore point",
)
def restore_from_point(
    point_id: int, body: MailRestoreCreate, session: DbSession, principal=Restorer
):
    point = _available(session, point_id)
    items = mrestore.items_in(session, point, folders=body.folders, archive_ids=body.message_ids)
    if not items:
        raise invalid("the selection holds no messages of this restore point", "message_ids")
    mailbox = session.get(Mailbox, point.mailbox_id)
    dest = body.destination.model_dump()
    dest["mailbox"] = dest["mailbox"] or mailbox.name
    job = queue_mail_restore(
        session,
        principal,
        {
            "mailbox_restore_point_id": point.id,
            "folders": body.folders,
            "message_ids": body.message_ids,
            "destination": dest,
            "messages": len(items),
        },
    )
    return JobQueued(job_id=job.id)


@router.get(
    "/mailbox-restore-points/{point_id}/export",
    summary="Export the restore point (or folders / messages of it) as EML in a zip, or mbox",
)
def export_point(
    point_id: int,
    session: DbSession,
    request: Request,
    principal=Depends(exporter),
    format: Literal["zip", "mbox"] = "zip",
    folder: list[str] | None = Query(default=None),
    ids: list[int] | None = Query(default=None),
):
    point = _available(session, point_id)
    items = mrestore.items_in(session, point, folders=folder, archive_ids=ids)
    mailbox = session.get(Mailbox, point.mailbox_id)
    record(
        session,
        principal.actor,
        "mailbox.export",
        "mailbox_restore_point",
        point.id,
        format=format,
        messages=len(items),
    )
    session.commit()
    return stream_export(session, request, items, format, f"{mailbox.name}-{point.seq}")


def point_count(session, mailbox_id: int) -> int:
    return session.scalar(
        select(func.count(MailboxRestorePoint.id)).where(
            MailboxRestorePoint.mailbox_id == mailbox_id
        )
    )
