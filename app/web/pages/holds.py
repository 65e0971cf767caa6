"""Legal holds: list, place (administrators), release with confirmation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy import func, select
from starlette.responses import RedirectResponse, Response

from app.api.problems import Problem, found
from app.api.routes.holds import SORTABLE, create_hold, release_hold
from app.api.schemas.catalog import LegalHoldCreate
from app.db.models import ExchangeServer, LegalHold, RestorePoint
from app.security.roles import Permission
from app.web import labels
from app.web.context import Ctx, Form, signed_in
from app.web.errors import WebRoute
from app.web.forms import FormState, apply_problem, apply_validation_error, optional, text
from app.web.paging import int_or_none, page_of
from app.web.queries import names
from app.web.templating import flash, render

router = APIRouter(route_class=WebRoute)
MANAGE = Permission.MANAGE_HOLDS
STATES = {"active": "In force", "released": "Released", "all": "All"}
SUBJECTS = {
    "server": "server_id",
    "restore_point": "restore_point_id",
    "mailbox": "mailbox",
    "search": "search_query",
}
# The API's "a server hold needs server_id", said next to the field.
SUBJECT_MISSING = {
    "server_id": "Choose the server whose restore points the hold keeps.",
    "restore_point_id": "Give the number of the restore point to keep.",
    "mailbox": "Give the mailbox address.",
    "search_query": "Give the search that selects the messages.",
}


@router.get("/holds")
def hold_list(request: Request, state: str | None = None, page: int = 1) -> Response:
    with signed_in(request) as ctx:
        state = state if state in STATES else "active"
        query = select(LegalHold)
        if state == "active":
            query = query.where(LegalHold.released_at.is_(None))
        elif state == "released":
            query = query.where(LegalHold.released_at.is_not(None))
        items, pager = page_of(
            ctx.session,
            query,
            page=page,
            sortable=SORTABLE,
            default_sort="-created_at",
            params={"state": state if state != "active" else None},
        )
        counts = dict(
            ctx.session.execute(
                select(LegalHold.released_at.is_(None), func.count()).group_by(
                    LegalHold.released_at.is_(None)
                )
            ).all()
        )
        points = {
            p.id: p
            for p in ctx.session.scalars(
                select(RestorePoint).where(
                    RestorePoint.id.in_({h.restore_point_id for h in items} - {None})
                )
            )
        }
        return render(
            request,
            "holds/list.html",
            {
                "section": "holds",
                "items": items,
                "pager": pager,
                "state": state,
                "states": STATES,
                "counts": {
                    "active": counts.get(True, 0),
                    "released": counts.get(False, 0),
                    "all": sum(counts.values()),
                },
                "servers": names(
                    ctx.session,
                    ExchangeServer,
                    [h.server_id for h in items] + [p.server_id for p in points.values()],
                ),
                "points": points,
                "scopes": labels.HOLD_SCOPES,
            },
            user=ctx.user,
        )


def _form_page(ctx: Ctx, state: FormState, status_code: int = 200) -> Response:
    return render(
        ctx.request,
        "holds/form.html",
        {
            "section": "holds",
            "form": state,
            "scopes": labels.HOLD_SCOPES,
            "servers": ctx.session.execute(
                select(ExchangeServer.id, ExchangeServer.name).order_by(ExchangeServer.name)
            ).all(),
        },
        user=ctx.user,
        status_code=status_code,
    )


@router.get("/holds/new")
def hold_new(request: Request, server: str | None = None, point: str | None = None) -> Response:
    """A new hold; from a restore point or a server's page the subject comes filled in."""
    with signed_in(request, MANAGE) as ctx:
        values: dict[str, Any] = {"scope": "server"}
        if (point_id := int_or_none(point)) is not None:
            values.update(scope="restore_point", restore_point_id=str(point_id))
        elif (server_id := int_or_none(server)) is not None:
            values.update(scope="server", server_id=str(server_id))
        return _form_page(ctx, FormState(values=values))


@router.post("/holds/new")
def hold_create(request: Request, form: Form) -> Response:
    with signed_in(request, MANAGE, form=form, check_form=True) as ctx:
        scope = text(form, "scope")
        values = {
            name: text(form, name)
            for name in (
                "name",
                "reason",
                "scope",
                "server_id",
                "restore_point_id",
                "mailbox",
                "search_query",
            )
        }
        state = FormState(values=values)
        # Only the subject the chosen scope needs goes to the API.
        subject = SUBJECTS.get(scope)
        data: dict[str, Any] = {
            "name": text(form, "name"),
            "reason": text(form, "reason"),
            "scope": scope,
        }
        if subject:
            data[subject] = optional(form, subject)
        try:
            body = LegalHoldCreate.model_validate(data)
        except ValidationError as exc:
            apply_validation_error(state, exc, model_field=subject or "scope")
            if subject and "hold needs" in state.errors.get(subject, ""):
                state.errors[subject] = SUBJECT_MISSING[subject]
            return _form_page(ctx, state, status_code=422)
        try:
            hold = create_hold(body, ctx.session, ctx.principal)
        except Problem as exc:
            ctx.session.rollback()
            if exc.status == 409:
                state.add("name", exc.detail[:1].upper() + exc.detail[1:])
            else:
                apply_problem(state, exc)
            return _form_page(ctx, state, status_code=exc.status)
        flash(
            request, f"Legal hold '{hold.name}' placed: nothing it covers expires until released."
        )
        return RedirectResponse("/holds", status_code=303)


def _get_hold(ctx: Ctx, hold_id: int) -> LegalHold:
    return found(ctx.session.get(LegalHold, hold_id), "legal hold", hold_id)


def _release_page(ctx: Ctx, hold: LegalHold, error: str | None = None, status_code=200):
    server = ctx.session.get(ExchangeServer, hold.server_id) if hold.server_id else None
    return render(
        ctx.request,
        "holds/release.html",
        {
            "section": "holds",
            "hold": hold,
            "server": server,
            "scopes": labels.HOLD_SCOPES,
            "error": error,
        },
        user=ctx.user,
        status_code=status_code,
    )


@router.get("/holds/{hold_id}/release")
def hold_release_confirm(request: Request, hold_id: int) -> Response:
    with signed_in(request, MANAGE) as ctx:
        return _release_page(ctx, _get_hold(ctx, hold_id))


@router.post("/holds/{hold_id}/release")
def hold_release(request: Request, hold_id: int, form: Form) -> Response:
    with signed_in(request, MANAGE, form=form, check_form=True) as ctx:
        hold = _get_hold(ctx, hold_id)
        try:
            release_hold(hold.id, ctx.session, ctx.principal)
        except Problem as exc:
            ctx.session.rollback()
            return _release_page(ctx, _get_hold(ctx, hold_id), exc.detail, exc.status)
        flash(request, f"Legal hold '{hold.name}' released.")
        return RedirectResponse("/holds", status_code=303)
