"""Mailboxes, the mail restore wizard, and the archive search (records requests, holds)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy import func, select
from starlette.responses import RedirectResponse, Response

from app.api.mail import queue_mail_restore
from app.api.problems import Problem, found
from app.api.routes.archive import hold_search
from app.api.routes.holds import create_hold
from app.api.schemas.catalog import LegalHoldCreate
from app.api.schemas.mailboxes import Destination, SearchHoldCreate
from app.audit import record
from app.db.models import Connection, LegalHold, Mailbox, MailboxRestorePoint
from app.mailboxes import archive
from app.mailboxes import restore as mrestore
from app.security.roles import Permission
from app.web.context import Ctx, Form, signed_in
from app.web.errors import WebRoute
from app.web.forms import text
from app.web.templating import flash, render

router = APIRouter(route_class=WebRoute)
PAGE = 50
WHERE = {
    "original": "Where it was (original folder)",
    "recovered": "A “Recovered Items” folder",
    "folder": "A folder I name",
}


def _mailbox(ctx: Ctx, mailbox_id: int) -> Mailbox:
    return found(ctx.session.get(Mailbox, mailbox_id), "mailbox", mailbox_id)


@router.get("/mailboxes")
def mailbox_list(request: Request) -> Response:
    with signed_in(request) as ctx:
        rows = ctx.session.execute(
            select(Mailbox, Connection.name)
            .join(Connection, Connection.id == Mailbox.connection_id)
            .order_by(Connection.name, Mailbox.name)
        ).all()
        latest = {
            p.mailbox_id: p
            for p in ctx.session.scalars(
                select(MailboxRestorePoint).where(
                    MailboxRestorePoint.id.in_(
                        select(func.max(MailboxRestorePoint.id)).group_by(
                            MailboxRestorePoint.mailbox_id
                        )
                    )
                )
            )
        }
        held = set(
            ctx.session.scalars(
                select(LegalHold.mailbox).where(
                    LegalHold.released_at.is_(None), LegalHold.scope == "mailbox"
                )
            )
        )
        return render(
            request,
            "mailboxes/list.html",
            {"section": "mailboxes", "rows": rows, "latest": latest, "held": held},
            user=ctx.user,
        )


@router.get("/mailboxes/{mailbox_id}")
def mailbox_detail(request: Request, mailbox_id: int) -> Response:
    with signed_in(request) as ctx:
        mbx = _mailbox(ctx, mailbox_id)
        points = ctx.session.scalars(
            select(MailboxRestorePoint)
            .where(MailboxRestorePoint.mailbox_id == mbx.id)
            .order_by(MailboxRestorePoint.seq.desc())
            .limit(100)
        ).all()
        holds = ctx.session.scalars(
            select(LegalHold).where(
                LegalHold.released_at.is_(None),
                LegalHold.scope == "mailbox",
                LegalHold.mailbox == mbx.name,
            )
        ).all()
        return render(
            request,
            "mailboxes/detail.html",
            {
                "section": "mailboxes",
                "mbx": mbx,
                "points": points,
                "holds": holds,
                "connection": ctx.session.get(Connection, mbx.connection_id),
            },
            user=ctx.user,
        )


@router.post("/mailboxes/{mailbox_id}/hold")
def mailbox_hold(request: Request, mailbox_id: int, form: Form) -> Response:
    with signed_in(request, Permission.MANAGE_HOLDS, form=form, check_form=True) as ctx:
        mbx = _mailbox(ctx, mailbox_id)
        try:
            body = LegalHoldCreate(
                name=text(form, "name"),
                reason=text(form, "reason"),
                scope="mailbox",
                mailbox=mbx.name,
            )
            hold = create_hold(body, ctx.session, ctx.principal)
        except (ValidationError, Problem) as exc:
            ctx.session.rollback()
            flash(request, f"No hold placed: {_say(exc)}", "bad")
            return RedirectResponse(f"/mailboxes/{mbx.id}", status_code=303)
        flash(request, f"Legal hold '{hold.name}' placed on {mbx.name}: nothing in it expires.")
        return RedirectResponse(f"/mailboxes/{mbx.id}", status_code=303)


def _say(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{first['loc'][-1] if first['loc'] else 'input'}: {first['msg']}"
    return getattr(exc, "detail", str(exc))


# -- the restore wizard: mailbox → restore point → folder or search → messages → where --------


@router.get("/mailboxes/{mailbox_id}/restore")
def restore_wizard(
    request: Request,
    mailbox_id: int,
    point: int | None = None,
    folder: str | None = None,
    q: str | None = None,
    page: int = 1,
) -> Response:
    with signed_in(request, Permission.RUN_RESTORE) as ctx:
        mbx = _mailbox(ctx, mailbox_id)
        points = ctx.session.scalars(
            select(MailboxRestorePoint)
            .where(
                MailboxRestorePoint.mailbox_id == mbx.id, MailboxRestorePoint.status == "available"
            )
            .order_by(MailboxRestorePoint.seq.desc())
            .limit(200)
        ).all()
        chosen = next((p for p in points if p.id == point), None)
        folders, items, total, ids = [], [], 0, None
        heads: dict[int, Any] = {}
        if chosen is not None:
            folders = mrestore.folders_in(ctx.session, chosen)
            if q:
                found = archive.matching_ids(ctx.session, archive.SearchQuery(terms=q))
                ids = found
            if folder or q:
                page = max(1, page)
                selection = mrestore.items_in(
                    ctx.session, chosen, folders=[folder] if folder else None, archive_ids=ids
                )
                total = len(selection)
                items = selection[(page - 1) * PAGE : page * PAGE]
                from app.db.models import ArchiveMessage

                heads = {
                    a.id: a
                    for a in ctx.session.scalars(
                        select(ArchiveMessage).where(
                            ArchiveMessage.id.in_([i.archive_id for i in items])
                        )
                    )
                }
        return render(
            request,
            "mailboxes/restore.html",
            {
                "section": "mailboxes",
                "mbx": mbx,
                "points": points,
                "chosen": chosen,
                "folders": folders,
                "folder": folder,
                "q": q or "",
                "items": items,
                "heads": heads,
                "total": total,
                "page": page,
                "pages": max(1, (total + PAGE - 1) // PAGE),
                "where": WHERE,
            },
            user=ctx.user,
        )


def _destination(form, default_mailbox: str | None) -> Destination:
    where = text(form, "where") or "original"
    return Destination(
        mailbox=text(form, "target_mailbox") or default_mailbox,
        where=where,
        folder=text(form, "target_folder") or None,
    )


@router.post("/mailboxes/{mailbox_id}/restore")
def restore_submit(request: Request, mailbox_id: int, form: Form) -> Response:
    with signed_in(request, Permission.RUN_RESTORE, form=form, check_form=True) as ctx:
        mbx = _mailbox(ctx, mailbox_id)
        back = f"/mailboxes/{mbx.id}/restore"
        try:
            point = mrestore.restore_point(ctx.session, int(text(form, "point") or 0))
        except (LookupError, ValueError, mrestore.NothingToRestore):
            flash(request, "Choose an available restore point first.", "bad")
            return RedirectResponse(back, status_code=303)
        scope = text(form, "scope")  # "messages", "folder" or "mailbox"
        ids = [int(v) for v in form.getlist("message") if str(v).isdigit()]
        folder = text(form, "folder") or None
        folders = [folder] if scope == "folder" and folder else None
        message_ids = ids if scope == "messages" else None
        if scope == "messages" and not ids:
            flash(request, "Tick the messages to restore, or restore the whole folder.", "bad")
            return RedirectResponse(f"{back}?point={point.id}", status_code=303)
        try:
            dest = _destination(form, mbx.name)
        except ValidationError as exc:
            flash(request, f"Where to restore: {_say(exc)}", "bad")
            return RedirectResponse(f"{back}?point={point.id}", status_code=303)
        items = mrestore.items_in(ctx.session, point, folders=folders, archive_ids=message_ids)
        if not items:
            flash(request, "Nothing selected to restore.", "bad")
            return RedirectResponse(f"{back}?point={point.id}", status_code=303)
        job = queue_mail_restore(
            ctx.session,
            ctx.principal,
            {
                "mailbox_restore_point_id": point.id,
                "folders": folders,
                "message_ids": message_ids,
                "destination": dest.model_dump(),
                "messages": len(items),
            },
        )
        flash(request, f"Restoring {len(items)} message(s) into {dest.mailbox}.")
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)


# -- the archive ----------------------------------------------------------------------------------


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        day = datetime.fromisoformat(value)
    except ValueError:
        return None
    return day if day.tzinfo else day.replace(tzinfo=UTC)


@router.get("/archive")
def archive_search(
    request: Request,
    terms: str = "",
    people: str = "",
    mailbox: str = "",
    sent_from: str = "",
    sent_to: str = "",
    page: int = 1,
) -> Response:
    with signed_in(request) as ctx:
        query = archive.SearchQuery(
            terms[:500], people[:255], mailbox[:255], _when(sent_from), _when(sent_to)
        )
        result = None
        page = max(1, page)
        if not query.empty:
            result = archive.search(ctx.session, query, limit=PAGE, offset=(page - 1) * PAGE)
            # Reading people's mail is audited, from the browser as from the API.
            record(
                ctx.session,
                ctx.principal.actor,
                "archive.search",
                "archive",
                None,
                total=result.total,
                **query.as_dict(),
            )
        mailboxes = ctx.session.scalars(select(Mailbox.name).distinct().order_by(Mailbox.name))
        params = {
            "terms": terms,
            "people": people,
            "mailbox": mailbox,
            "sent_from": sent_from,
            "sent_to": sent_to,
        }
        return render(
            request,
            "archive/search.html",
            {
                "section": "archive",
                "params": params,
                "result": result,
                "page": page,
                "pages": max(1, ((result.total if result else 0) + PAGE - 1) // PAGE),
                "mailboxes": list(mailboxes),
                "where": WHERE,
                "query_string": urlencode({k: v for k, v in params.items() if v}),
            },
            user=ctx.user,
        )


@router.post("/archive/restore")
def archive_restore(request: Request, form: Form) -> Response:
    with signed_in(request, Permission.RUN_RESTORE, form=form, check_form=True) as ctx:
        ids = [int(v) for v in form.getlist("message") if str(v).isascii() and str(v).isdigit()]
        back = "/archive?" + text(form, "back_query")
        items = mrestore.archive_items(ctx.session, ids)
        if not items:
            flash(request, "Tick the messages to restore.", "bad")
            return RedirectResponse(back, status_code=303)
        try:
            dest = _destination(form, None)  # blank: each goes back where it was
        except ValidationError as exc:
            flash(request, f"Where to restore: {_say(exc)}", "bad")
            return RedirectResponse(back, status_code=303)
        job = queue_mail_restore(
            ctx.session,
            ctx.principal,
            {"message_ids": ids, "destination": dest.model_dump(), "messages": len(items)},
        )
        whose = dest.mailbox or ", ".join(sorted({i.mailbox for i in items}))
        flash(request, f"Restoring {len(items)} message(s) into {whose}.")
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.post("/archive/hold")
def archive_hold(request: Request, form: Form) -> Response:
    with signed_in(request, Permission.MANAGE_HOLDS, form=form, check_form=True) as ctx:
        back = "/archive?" + text(form, "back_query")
        try:
            body = SearchHoldCreate(
                name=text(form, "name"),
                reason=text(form, "reason"),
                terms=text(form, "terms"),
                people=text(form, "people"),
                mailbox=text(form, "mailbox"),
                sent_from=_when(text(form, "sent_from")),
                sent_to=_when(text(form, "sent_to")),
            )
            hold = hold_search(body, ctx.session, ctx.principal)
        except (ValidationError, Problem) as exc:
            ctx.session.rollback()
            flash(request, f"No hold placed: {_say(exc)}", "bad")
            return RedirectResponse(back, status_code=303)
        flash(request, f"Legal hold '{hold.name}' placed: what this search finds never expires.")
        return RedirectResponse(back, status_code=303)
