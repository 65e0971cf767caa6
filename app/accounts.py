"""Users and API tokens, shared by the API, the dashboard and the CLI."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
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
    """Create a token; the clear text is returned once and never stored."""
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
