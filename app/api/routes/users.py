"""Users (admins manage them; everyone may read themselves and change their password)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import select

from app.accounts import AccountError, create_user, keep_an_admin
from app.api import API_PREFIX
from app.api.deps import CurrentPrincipal, DbSession, client_ip, require, runtime
from app.api.pagination import Page, PageWindow, paginate
from app.api.problems import Problem, conflict, invalid, not_found
from app.api.schemas.users import PasswordChange, UserCreate, UserOut, UserUpdate
from app.audit import record
from app.db.models import User
from app.security import sessions
from app.security.passwords import hash_password, verify_password
from app.security.roles import Permission, Role

router = APIRouter(prefix=API_PREFIX, tags=["users"])
Admin = require(Permission.MANAGE_USERS)


def _get_user(session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise not_found("user", user_id)
    return user


def _keeps_an_admin(session, user: User, role: Role | None, active: bool | None) -> None:
    try:
        keep_an_admin(session, user, role, active)
    except AccountError as exc:
        raise conflict(str(exc)) from exc


@router.get("/me", response_model=UserOut, summary="Who am I")
def me(session: DbSession, principal: CurrentPrincipal):
    return _get_user(session, principal.user_id)


@router.post("/me/password", status_code=204, summary="Change my password")
def change_password(
    request: Request, body: PasswordChange, session: DbSession, principal: CurrentPrincipal
):
    user = _get_user(session, principal.user_id)
    # Throttled like sign-in: a stolen session must not become a password-guessing oracle.
    throttle, key, address = (
        runtime(request).throttle,
        f"password:{user.username}",
        client_ip(request),
    )
    wait = throttle.retry_after(key, address)
    if wait:
        raise Problem(
            429,
            f"too many wrong current passwords; try again in {wait} s",
            type_="/problems/throttled",
            headers={"Retry-After": str(wait)},
        )
    if not verify_password(user.password_hash, body.current_password.get_secret_value()):
        throttle.failed(key, address)
        raise Problem(403, "the current password is wrong", type_="/problems/forbidden")
    throttle.succeeded(key, address)
    user.password_hash = hash_password(body.new_password.get_secret_value())
    # Whoever else holds a session (a copied cookie) is out; this browser stays signed in.
    sessions.end_all(user)
    if principal.via == "session":
        sessions.start(request.session, user)
    record(session, principal.actor, "user.password_change", "user", user.id)
    return Response(status_code=204)


@router.get("/users", response_model=Page[UserOut], summary="List users")
def list_users(
    session: DbSession,
    _=Admin,
    role: Role | None = None,
    sort: str | None = Query(default=None, description="username, role, created_at"),
    window: PageWindow = Depends(),
):
    query = select(User)
    if role is not None:
        query = query.where(User.role == role)
    return paginate(
        session,
        query,
        window,
        sort,
        sortable={"username": User.username, "role": User.role, "created_at": User.created_at},
        default_sort="username",
    )


@router.post("/users", response_model=UserOut, status_code=201, summary="Create a user")
def add_user(body: UserCreate, session: DbSession, principal=Admin):
    try:
        return create_user(
            session,
            principal.actor,
            body.username,
            body.password.get_secret_value(),
            body.role,
            body.full_name,
        )
    except AccountError as exc:
        raise conflict(str(exc)) from exc


@router.get("/users/{user_id}", response_model=UserOut, summary="Read a user")
def read_user(user_id: int, session: DbSession, _=Admin):
    return _get_user(session, user_id)


@router.patch("/users/{user_id}", response_model=UserOut, summary="Change a user")
def update_user(user_id: int, body: UserUpdate, session: DbSession, principal=Admin):
    user = _get_user(session, user_id)
    _keeps_an_admin(session, user, body.role, body.is_active)
    changes = body.model_dump(exclude_unset=True, exclude={"password"})
    for field, value in changes.items():
        if value is None:
            raise invalid(f"{field} cannot be null", field)
        setattr(user, field, value)
    fields = sorted(changes)
    if body.password is not None:
        user.password_hash = hash_password(body.password.get_secret_value())
        fields.append("password")
    if body.password is not None or "role" in changes or changes.get("is_active") is False:
        sessions.end_all(user)
    record(session, principal.actor, "user.update", "user", user.id, fields=fields)
    return user


@router.delete("/users/{user_id}/sessions", status_code=204, summary="End a user's sessions")
def end_user_sessions(user_id: int, session: DbSession, principal=Admin):
    user = _get_user(session, user_id)
    sessions.end_all(user)
    record(session, principal.actor, "user.sessions_end", "user", user.id)
    return Response(status_code=204)


@router.delete("/users/{user_id}", status_code=204, summary="Delete a user")
def delete_user(user_id: int, session: DbSession, principal=Admin):
    user = _get_user(session, user_id)
    if user.id == principal.user_id:
        raise conflict("you cannot delete yourself")
    _keeps_an_admin(session, user, None, False)
    session.delete(user)
    record(session, principal.actor, "user.delete", "user", user_id, username=user.username)
    return Response(status_code=204)
