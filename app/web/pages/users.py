"""Users and API tokens in the dashboard: admins manage everyone; each user their own tokens.

As in Proxmox Backup Server, a token belongs to a user and never has more rights than its
user; its secret is shown once, on the page that created it, and only its prefix afterwards.
The rules (last admin, sessions ending on a reset) live in :mod:`app.accounts`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from starlette.responses import RedirectResponse, Response

from app.accounts import (
    AccountError,
    change_user,
    create_token,
    create_user,
    end_user_sessions,
    reset_password,
    revoke_token,
)
from app.api.problems import Problem
from app.db.models import ApiToken, User
from app.security.roles import Permission, Role
from app.web.context import Ctx, Form, signed_in
from app.web.errors import WebRoute
from app.web.forms import FormState, text, values_of
from app.web.templating import flash, render

router = APIRouter(route_class=WebRoute)

ROLES = {
    Role.ADMIN: "Administrator — everything, users included",
    Role.OPERATOR: "Operator — policies, backups and restores",
    Role.RESTORE_OPERATOR: "Restore operator — restores only",
    Role.AUDITOR: "Auditor — reads everything, the audit log included; changes nothing",
}
MIN_PASSWORD = 12
# Token lifetimes offered in the form; admins may still set a stricter maximum elsewhere.
LIFETIMES = {"30": "30 days", "90": "90 days", "365": "1 year"}
NEW_TOKEN = "new_token"


def _user(ctx: Ctx, user_id: int) -> User:
    user = ctx.session.get(User, user_id)
    if user is None:
        raise Problem(404, f"there is no user {user_id}", type_="/problems/not-found")
    return user


def _token_rows(ctx: Ctx, user_id: int | None):
    query = select(ApiToken).options(selectinload(ApiToken.user)).order_by(ApiToken.id.desc())
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    return ctx.session.scalars(query).all()


@router.get("/users")
def user_list(request: Request) -> Response:
    with signed_in(request, Permission.MANAGE_USERS) as ctx:
        users = ctx.session.scalars(select(User).order_by(User.username)).all()
        counts = dict(
            ctx.session.execute(
                select(ApiToken.user_id, func.count())
                .where(ApiToken.revoked_at.is_(None))
                .group_by(ApiToken.user_id)
            ).all()
        )
        return render(
            request,
            "users/list.html",
            {
                "section": "users",
                "users": users,
                "token_counts": counts,
                "tokens": _token_rows(ctx, None),
                "roles": ROLES,
            },
            user=ctx.user,
        )


def _new_user_page(ctx: Ctx, state: FormState, status_code: int = 200) -> Response:
    return render(
        ctx.request,
        "users/form.html",
        {"section": "users", "form": state, "roles": ROLES},
        user=ctx.user,
        status_code=status_code,
    )


@router.get("/users/new")
def user_new(request: Request) -> Response:
    with signed_in(request, Permission.MANAGE_USERS) as ctx:
        return _new_user_page(ctx, FormState(values={"role": Role.OPERATOR.value}))


@router.post("/users/new")
def user_create(request: Request, form: Form) -> Response:
    with signed_in(request, Permission.MANAGE_USERS, form=form, check_form=True) as ctx:
        state = FormState(values=values_of(form))
        username, password = text(form, "username"), form.get("password") or ""
        role = text(form, "role")
        if not username:
            state.add("username", "Give the user's sign-in name.")
        elif len(username) > 64:
            state.add("username", "Use at most 64 characters.")
        if role not in {r.value for r in Role}:
            state.add("role", "Choose a role.")
        if not isinstance(password, str) or len(password) < MIN_PASSWORD:
            state.add("password", f"Use at least {MIN_PASSWORD} characters.")
        if state.failed:
            return _new_user_page(ctx, state, 422)
        try:
            user = create_user(
                ctx.session,
                ctx.principal.actor,
                username,
                password,
                Role(role),
                text(form, "full_name")[:128],
            )
        except AccountError as exc:
            ctx.session.rollback()
            state.add("username", str(exc).capitalize() + ".")
            return _new_user_page(ctx, state, 409)
        flash(request, f"User '{user.username}' created with role {user.role}.")
        return RedirectResponse(f"/users/{user.id}", status_code=303)


def _user_page(ctx: Ctx, user: User, state: FormState | None = None, status_code: int = 200):
    return render(
        ctx.request,
        "users/detail.html",
        {
            "section": "users",
            "subject": user,
            "tokens": _token_rows(ctx, user.id),
            "roles": ROLES,
            "form": state or FormState(),
        },
        user=ctx.user,
        status_code=status_code,
    )


@router.get("/users/{user_id}")
def user_detail(request: Request, user_id: int) -> Response:
    with signed_in(request, Permission.MANAGE_USERS) as ctx:
        return _user_page(ctx, _user(ctx, user_id))


@router.post("/users/{user_id}")
def user_update(request: Request, user_id: int, form: Form) -> Response:
    with signed_in(request, Permission.MANAGE_USERS, form=form, check_form=True) as ctx:
        user = _user(ctx, user_id)
        role = text(form, "role")
        if role not in {r.value for r in Role}:
            state = FormState(values=values_of(form))
            state.add("role", "Choose a role.")
            return _user_page(ctx, user, state, 422)
        try:
            fields = change_user(
                ctx.session,
                ctx.principal.actor,
                user,
                role=Role(role),
                is_active=text(form, "is_active") == "1",
            )
        except AccountError as exc:
            ctx.session.rollback()
            return _user_page(ctx, user, FormState(message=str(exc).capitalize() + "."), 409)
        if fields:
            flash(request, f"'{user.username}' changed; their sessions have ended.")
        return RedirectResponse(f"/users/{user.id}", status_code=303)


@router.post("/users/{user_id}/password")
def user_reset_password(request: Request, user_id: int, form: Form) -> Response:
    with signed_in(request, Permission.MANAGE_USERS, form=form, check_form=True) as ctx:
        user = _user(ctx, user_id)
        password = form.get("password")
        if not isinstance(password, str) or len(password) < MIN_PASSWORD:
            state = FormState()
            state.add("password", f"Use at least {MIN_PASSWORD} characters.")
            return _user_page(ctx, user, state, 422)
        reset_password(ctx.session, ctx.principal.actor, user, password)
        flash(request, f"Password of '{user.username}' reset; their sessions have ended.")
        return RedirectResponse(f"/users/{user.id}", status_code=303)


@router.post("/users/{user_id}/sessions")
def user_end_sessions(request: Request, user_id: int, form: Form) -> Response:
    with signed_in(request, Permission.MANAGE_USERS, form=form, check_form=True) as ctx:
        user = _user(ctx, user_id)
        end_user_sessions(ctx.session, ctx.principal.actor, user)
        note = " (yours too: sign in again)" if user.id == ctx.user.id else ""
        flash(request, f"Every session of '{user.username}' has ended{note}.")
        return RedirectResponse(f"/users/{user.id}", status_code=303)


@router.get("/account")
def my_account(request: Request) -> Response:
    with signed_in(request, None) as ctx:
        created = request.session.pop(NEW_TOKEN, None)
        return render(
            request,
            "users/account.html",
            {
                "section": "account",
                "tokens": _token_rows(ctx, ctx.user.id),
                "new_token": created,
                "lifetimes": LIFETIMES,
                "form": FormState(values={"expires_in_days": "90"}),
                "roles": ROLES,
            },
            user=ctx.user,
        )


@router.post("/account/tokens")
def my_token_create(request: Request, form: Form) -> Response:
    with signed_in(request, None, form=form, check_form=True) as ctx:
        name, days = text(form, "name")[:64], text(form, "expires_in_days")
        if not name or days not in LIFETIMES:
            state = FormState(values=values_of(form))
            if not name:
                state.add("name", "Say what the token is for, e.g. 'monitoring'.")
            if days not in LIFETIMES:
                state.add("expires_in_days", "Choose how long it lives.")
            return render(
                request,
                "users/account.html",
                {
                    "section": "account",
                    "tokens": _token_rows(ctx, ctx.user.id),
                    "new_token": None,
                    "lifetimes": LIFETIMES,
                    "form": state,
                    "roles": ROLES,
                },
                user=ctx.user,
                status_code=422,
            )
        row, token = create_token(ctx.session, ctx.principal.actor, ctx.user, name, int(days))
        # Shown once, on the next page only; the database keeps just its hash.
        request.session[NEW_TOKEN] = {"name": row.name, "token": token}
        return RedirectResponse("/account", status_code=303)


@router.post("/tokens/{token_id}/revoke")
def token_revoke(request: Request, token_id: int, form: Form) -> Response:
    with signed_in(request, None, form=form, check_form=True) as ctx:
        row = ctx.session.get(ApiToken, token_id)
        mine = row is not None and row.user_id == ctx.user.id
        if row is None or not (mine or ctx.can(Permission.MANAGE_USERS)):
            raise Problem(404, f"there is no token {token_id}", type_="/problems/not-found")
        revoke_token(ctx.session, ctx.principal.actor, token_id)
        flash(request, f"Token '{row.name}' ({row.prefix}…) revoked.")
        back = "/account" if mine else f"/users/{row.user_id}"
        return RedirectResponse(back, status_code=303)
