"""Who is looking at a page: the signed-in user, the database session, CSRF and roles."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app.api.deps import CSRF_HEADER, Principal, check_csrf, client_ip, runtime, session_user
from app.api.problems import Problem
from app.db.models import User
from app.security.roles import Permission, role_allows


class LoginRequired(Exception):
    """Raised when a page needs a signed-in user; answered with a redirect to /login."""

    def __init__(self, next_url: str):
        super().__init__(next_url)
        self.next_url = next_url


async def _form(request: Request) -> FormData:
    return await request.form()


# Parsed in the event loop, so the (synchronous) page functions can read it.
Form = Annotated[FormData, Depends(_form)]


def safe_next(value: str | None, default: str = "/") -> str:
    """Only a path on this site: no scheme, no host, no protocol-relative '//'."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return default
    if "\\" in value or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def login_url(next_url: str | None) -> str:
    target = safe_next(next_url, "")
    if not target or target == "/":
        return "/login"
    return "/login?" + urlencode({"next": target})


def forbidden(user: User, permission: Permission) -> Problem:
    return Problem(
        403,
        f"Your role ({user.role}) does not allow this. Ask an administrator if you need it.",
        type_="/problems/forbidden",
        permission=str(permission),
    )


@dataclass
class Ctx:
    """One dashboard request: the request, an open database session and the user."""

    request: Request
    session: Session
    user: User

    @property
    def principal(self) -> Principal:
        return Principal(
            self.user.id,
            self.user.username,
            self.user.role,
            "session",
            None,
            client_ip(self.request),
        )

    def can(self, permission: Permission) -> bool:
        return role_allows(self.user.role, permission)

    def require(self, permission: Permission) -> None:
        if not self.can(permission):
            raise forbidden(self.user, permission)


def presented_csrf(request: Request, form: FormData | None) -> str | None:
    value = form.get("csrf_token") if form is not None else None
    if isinstance(value, str) and value:
        return value
    return request.headers.get(CSRF_HEADER)


@contextmanager
def signed_in(
    request: Request,
    permission: Permission | None = Permission.READ,
    *,
    form: FormData | None = None,
    check_form: bool = False,
) -> Iterator[Ctx]:
    """Open a database session for a signed-in user, or send them to the sign-in page.

    The transaction commits when the block ends without an exception, i.e. before the
    response leaves, so a redirect after a change always lands on a page that shows it.
    A POST passes ``check_form=True``: its CSRF token is checked before the role.
    """
    with runtime(request).db.session() as session:
        user = session_user(request, session)
        if user is None:
            path = request.url.path
            if request.method == "GET" and request.url.query:
                path += "?" + request.url.query
            raise LoginRequired(path)
        if check_form:
            check_csrf(request, presented_csrf(request, form))
        ctx = Ctx(request, session, user)
        if permission is not None:
            ctx.require(permission)
        yield ctx
