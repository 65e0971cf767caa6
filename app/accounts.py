"""Users and API tokens, shared by the API, the dashboard and the CLI."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit import Actor, record
from app.db.models import ApiToken, User
from app.db.types import utcnow
from app.security import sessions
from app.security.passwords import hash_password
from app.security.roles import Role
from app.security.tokens import new_token


class AccountError(ValueError):
    pass


def create_user(
    session: Session, actor: Actor, username: str, password: str, role: Role, full_name: str = ""
) -> User:
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AccountError(f"a user named '{username}' already exists")
    user = User(
        username=username, full_name=full_name, password_hash=hash_password(password), role=role
    )
    session.add(user)
    session.flush()
    record(session, actor, "user.create", "user", user.id, username=username, role=role)
    return user


def create_token(
    session: Session, actor: Actor, user: User, name: str, expires_in_days: int | None
) -> tuple[ApiToken, str]:
    """Create a token; the clear text is returned once and never stored.

    With a maximum lifetime set by an admin, a token without an expiry gets the maximum and
    a longer one is refused.
    """
    from app.security.settings import load

    longest = load(session).max_token_days
    if longest is not None:
        if expires_in_days is not None and expires_in_days > longest:
            raise AccountError(f"tokens may live at most {longest} days (an admin's setting)")
        expires_in_days = expires_in_days or longest
    token, prefix, digest = new_token()
    row = ApiToken(
        user_id=user.id,
        name=name,
        prefix=prefix,
        token_hash=digest,
        expires_at=None if expires_in_days is None else utcnow() + timedelta(days=expires_in_days),
    )
    session.add(row)
    session.flush()
    record(
        session,
        actor,
        "token.create",
        "token",
        row.id,
        user=user.username,
        name=name,
        prefix=prefix,
    )
    return row, token


def reset_password(session: Session, actor: Actor, user: User, password: str) -> None:
    """An administrator sets a new password (the owner is not asked for the old one); every
    session of that user ends, as after a reset in the dashboard or the API."""
    user.password_hash = hash_password(password)
    sessions.end_all(user)
    record(session, actor, "user.password_reset", "user", user.id, username=user.username)


def revoke_token(session: Session, actor: Actor, token_id: int) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise AccountError(f"no API token with id {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        record(session, actor, "token.revoke", "token", row.id, prefix=row.prefix)
    return row


def keep_an_admin(session: Session, user: User, role: Role | None, active: bool | None) -> None:
    """Refuse the change that would leave nobody able to administer Bulwark."""
    losing = (
        user.role == Role.ADMIN
        and user.is_active
        and ((role is not None and role != Role.ADMIN) or active is False)
    )
    if losing and (
        session.scalar(select(func.count(User.id)).where(User.role == Role.ADMIN, User.is_active))
        <= 1
    ):
        raise AccountError("this is the last active admin; make another admin first")


def change_user(
    session: Session, actor: Actor, user: User, *, role: Role | None, is_active: bool | None
) -> list[str]:
    """An admin changes a user's role or disables them; a change of either ends the user's
    sessions, so a demoted or disabled user keeps no signed-in browser."""
    keep_an_admin(session, user, role, is_active)
    fields = []
    if role is not None and role != user.role:
        user.role = role
        fields.append("role")
    if is_active is not None and is_active != user.is_active:
        user.is_active = is_active
        fields.append("is_active")
    if fields:
        sessions.end_all(user)
        record(session, actor, "user.update", "user", user.id, fields=fields)
    return fields


def end_user_sessions(session: Session, actor: Actor, user: User) -> None:
    sessions.end_all(user)
    record(session, actor, "user.sessions_end", "user", user.id)
