"""Request dependencies: the database session, who is asking, and whether they may."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.problems import Problem
from app.audit import Actor
from app.db.models import ApiToken, User
from app.db.types import utcnow
from app.security import sessions
from app.security.roles import Permission, Role, role_allows
from app.security.tokens import TOKEN_PREFIX, hash_token
from app.state import Runtime

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_HEADER = "X-CSRF-Token"


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def db_session(request: Request) -> Iterator[Session]:
    with runtime(request).db.session() as session:
        yield session


# Function scope: the transaction commits before the response is sent, so a client that got
# 201 reads its change straight away, and a failed commit is an error response, not a lie.
DbSession = Annotated[Session, Depends(db_session, scope="function")]


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    role: Role
    via: str  # session | token
    token_prefix: str | None = None
    client_ip: str | None = None

    @property
    def actor(self) -> Actor:
        name = self.username if self.via == "session" else f"{self.username}/{self.token_prefix}"
        return Actor(name, "user" if self.via == "session" else "token", self.client_ip)

    def can(self, permission: Permission) -> bool:
        return role_allows(self.role, permission)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _from_token(request: Request, session: Session, token: str) -> Principal:
    unauthorized = Problem(
        401,
        "the API token is unknown, revoked or expired",
        type_="/problems/unauthenticated",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if not token.startswith(TOKEN_PREFIX):
        raise unauthorized
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    now = utcnow()
    if (
        row is None
        or row.revoked_at is not None
        or (row.expires_at is not None and row.expires_at <= now)
        or not row.user.is_active
    ):
        raise unauthorized
    row.last_used_at = now
    return Principal(
        row.user.id, row.user.username, row.user.role, "token", row.prefix, client_ip(request)
    )


def session_user(request: Request, session: Session) -> User | None:
    """The user the session cookie belongs to, if it still does (see app.security.sessions)."""
    user_id = request.session.get(sessions.USER_KEY)
    if user_id is None:
        return None
    user = session.get(User, user_id) if isinstance(user_id, int) else None
    if user is None or not user.is_active or not sessions.belongs_to(request.session, user):
        request.session.clear()
        return None
    return user


def credentials(request: Request, session: Session) -> Principal:
    """Who presented which credential: an API token or a session cookie (401 if neither).

    Also called by the request guard (app.security.guard) before any body is read; a new
    kind of credential is one more branch here, and both places know it.
    """
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return _from_token(request, session, auth[7:].strip())
    user = session_user(request, session)
    if user is None:
        raise Problem(
            401,
            "sign in, or send an API token as 'Authorization: Bearer <token>'",
            type_="/problems/unauthenticated",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Principal(user.id, user.username, user.role, "session", None, client_ip(request))


def authenticate(request: Request, session: DbSession) -> Principal:
    principal = credentials(request, session)
    # A browser session is cookie-borne, so unsafe calls must prove they came from our pages.
    if principal.via == "session" and request.method not in SAFE_METHODS:
        check_csrf(request, request.headers.get(CSRF_HEADER))
    return principal


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, presented: str | None) -> None:
    expected = request.session.get("csrf")
    if not expected or not presented or not secrets.compare_digest(expected, presented):
        raise Problem(
            403,
            "missing or invalid CSRF token; reload the page and try again",
            type_="/problems/csrf",
        )


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


def require(permission: Permission):
    """Dependency factory: the caller must hold ``permission``."""

    def _check(principal: CurrentPrincipal) -> Principal:
        if not principal.can(permission):
            raise Problem(
                403,
                f"role '{principal.role}' may not do this (needs permission '{permission}')",
                type_="/problems/forbidden",
            )
        return principal

    return Depends(_check)


Reader = Annotated[Principal, require(Permission.READ)]
