"""The archive: search every message ever backed up (records requests), export the result
set, restore found messages, and place legal holds on a search."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import select

from app.api import API_PREFIX
from app.api.deps import DbSession, Reader, require, runtime
from app.api.downloads import attachment
from app.api.mail import exporter, queue_mail_restore, stream_export
from app.api.problems import Problem, conflict, found, invalid
from app.api.schemas.catalog import LegalHoldOut
from app.api.schemas.mailboxes import ArchiveRestoreCreate, JobQueued, SearchHoldCreate, SearchOut
from app.audit import record
from app.db.models import ArchiveMessage, LegalHold
from app.mailboxes import archive
from app.mailboxes import restore as mrestore
from app.repository import ChunkDamaged, RepositoryError, open_repository
from app.security.roles import Permission

router = APIRouter(prefix=API_PREFIX + "/archive", tags=["archive"])
MAX_EXPORT = 100_000


def search_query(
    terms: str = Query(default="", max_length=500, description="Words in headers and bodies"),
    people: str = Query(default="", max_length=255, description="Sender or recipients contain"),
    mailbox: str = Query(default="", max_length=255),
    sent_from: datetime | None = Query(default=None, description="Date header on or after"),
    sent_to: datetime | None = Query(default=None, description="Date header on or before"),
) -> archive.SearchQuery:
    if sent_from and sent_to and sent_from > sent_to:
        raise invalid("sent_from is after sent_to", "sent_from")
    return archive.SearchQuery(terms, people, mailbox, sent_from, sent_to)


@router.get("/search", response_model=SearchOut, summary="Search the archive")
def search(
    session: DbSession,
    principal: Reader,
    q: archive.SearchQuery = Depends(search_query),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0),
):
    result = archive.search(session, q, limit=limit, offset=offset)
    record(
        session,
        principal.actor,
        "archive.search",
        "archive",
        None,
        total=result.total,
        **q.as_dict(),
    )
    return {
        "total": result.total,
        "limit": limit,
        "offset": offset,
        "items": [{**h.__dict__, "on_server": h.on_server} for h in result.hits],
    }


@router.get("/export", summary="Export what a search finds (EML in a zip, or mbox)")
def export(
    session: DbSession,
    request: Request,
    principal=Depends(exporter),
    q: archive.SearchQuery = Depends(search_query),
    format: Literal["zip", "mbox"] = "zip",
):
    if q.empty:
        raise invalid("narrow the search first: terms, people, a mailbox or dates", "terms")
    ids = archive.matching_ids(session, q)
    if len(ids) > MAX_EXPORT:
        raise invalid(f"{len(ids)} messages match; export at most {MAX_EXPORT} at a time")
    items = mrestore.archive_items(session, ids)
    record(
        session,
        principal.actor,
        "archive.export",
        "archive",
        None,
        format=format,
        messages=len(items),
        **q.as_dict(),
    )
    session.commit()
    return stream_export(session, request, items, format, "archive-export")


@router.get("/messages/{message_id}/eml", summary="Download one archived message")
def message_eml(message_id: int, session: DbSession, request: Request, principal=Depends(exporter)):
    msg = found(session.get(ArchiveMessage, message_id), "archived message", message_id)
    try:
        repo = open_repository(
            session, msg.repository_id, root_key=runtime(request).settings.root_key()
        )
        raw = repo.get_chunk(msg.digest)
    except (ChunkDamaged, RepositoryError) as exc:
        raise Problem(
            502, f"the repository copy cannot be read: {exc}", type_="/problems/repository"
        ) from exc
    record(session, principal.actor, "archive.download", "archive_message", msg.id)
    return Response(
        raw,
        media_type="message/rfc822",
        headers={"Content-Disposition": attachment(f"message-{msg.id}.eml")},
    )


@router.post(
    "/restore",
    response_model=JobQueued,
    status_code=202,
    summary="Restore archived messages (deleted on the server or not)",
)
def restore(
    body: ArchiveRestoreCreate, session: DbSession, principal=require(Permission.RUN_RESTORE)
):
    items = mrestore.archive_items(session, body.message_ids)
    if not items:
        raise invalid("none of these messages is in the archive", "message_ids")
    dest = body.destination.model_dump()  # no mailbox: each goes back where it was
    job = queue_mail_restore(
        session,
        principal,
        {"message_ids": body.message_ids, "destination": dest, "messages": len(items)},
    )
    return JobQueued(job_id=job.id)


@router.post(
    "/holds",
    response_model=LegalHoldOut,
    status_code=201,
    summary="Place a legal hold on everything a search finds (now and later)",
)
def hold_search(
    body: SearchHoldCreate, session: DbSession, principal=require(Permission.MANAGE_HOLDS)
):
    if session.scalar(select(LegalHold.id).where(LegalHold.name == body.name)):
        raise conflict(f"a legal hold named '{body.name}' already exists")
    q = archive.SearchQuery(body.terms, body.people, body.mailbox, body.sent_from, body.sent_to)
    if q.empty:
        raise invalid("a search hold needs terms, people, a mailbox or dates", "terms")
    hold = LegalHold(
        name=body.name,
        reason=body.reason,
        scope="search",
        search_query=json.dumps(q.as_dict()),
        mailbox=body.mailbox or None,
        created_by=principal.actor.name,
    )
    session.add(hold)
    session.flush()
    record(
        session,
        principal.actor,
        "legal_hold.create",
        "legal_hold",
        hold.id,
        name=hold.name,
        scope="search",
        matches=len(archive.matching_ids(session, q)),
        **q.as_dict(),
    )
    return hold
