"""The request guard: who is asking is checked before a request body is read, and no body is
read past the size its route allows.

It sits inside the session middleware (so the cookie is decoded) and in front of routing,
as plain ASGI: a refused request's body is never received. Unsafe methods only; a GET has
no body worth guarding. Sign-in is the one unsafe route open to strangers, and it gets a
small limit. A route that takes more (an upload) says so with :func:`allow_body`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import API_PREFIX
from app.api.problems import PROBLEM_JSON, Problem

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
DEFAULT_LIMIT = 1 << 20  # 1 MiB: far above any JSON document or form this service takes
# Paths open without credentials, with their own (small) limits.
PUBLIC: dict[str, int] = {"/login": 16 << 10}
# Path prefixes that take larger bodies (longest prefix wins).
LARGER: dict[str, int] = {}
# Path prefixes whose callers another credential identifies (the in-guest agent's): there
# it alone counts, never a user's token or session.
IDENTIFIERS: dict[str, Callable[[Request, Any], bool]] = {}


def identify_under(prefix: str, identified: Callable[[Request, Any], bool]) -> None:
    """Under ``prefix``, ``identified(request, session)`` says whether the caller is known."""
    IDENTIFIERS[prefix] = identified


def allow_body(prefix: str, limit: int) -> None:
    """Let requests under ``prefix`` carry up to ``limit`` bytes."""
    LARGER[prefix] = limit


def body_limit(path: str) -> int:
    if path in PUBLIC:
        return PUBLIC[path]
    matches = [p for p in LARGER if path.startswith(p)]
    return LARGER[max(matches, key=len)] if matches else DEFAULT_LIMIT


class RequestGuard:
    def __init__(self, app: ASGIApp, runtime):
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path not in PUBLIC and not await run_in_threadpool(self._identified, scope):
            if path.startswith(API_PREFIX) or path == "/metrics":
                await _refuse(
                    scope,
                    send,
                    401,
                    "sign in, or send an API token as 'Authorization: Bearer <token>'",
                    type_="/problems/unauthenticated",
                    headers=[(b"www-authenticate", b"Bearer")],
                )
            else:  # a dashboard form: back to the sign-in page, as the page itself would
                await _redirect_to_login(scope, send)
            return
        limit = body_limit(path)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(scope, send, 413, f"the request body is over {limit} bytes")
            return
        await self.app(scope, _counting(receive, limit), send)

    def _identified(self, scope: Scope) -> bool:
        from app.api.deps import credentials

        for prefix, identified in IDENTIFIERS.items():
            if scope["path"].startswith(prefix):
                with self.runtime.db.session() as session:
                    return identified(Request(scope), session)
        with self.runtime.db.session() as session:
            try:
                credentials(Request(scope), session)
            except Problem:
                return False
        return True


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _counting(receive: Receive, limit: int) -> Receive:
    """A receive that stops a body (chunked, or longer than it said) at ``limit`` bytes."""
    seen = 0

    async def _receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # An HTTPException is re-raised by FastAPI's body parsing: a 413 problem.
                raise HTTPException(413, f"the request body is over {limit} bytes")
        return message

    return _receive


async def _refuse(
    scope: Scope,
    send: Send,
    status: int,
    detail: str,
    *,
    type_: str = "about:blank",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    from http import HTTPStatus

    body = json.dumps(
        {
            "type": type_,
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": detail,
            "instance": scope["path"],
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                # The body was not read: the connection cannot carry another request.
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _redirect_to_login(scope: Scope, send: Send) -> None:
    headers = [(b"location", b"/login"), (b"content-length", b"0"), (b"connection", b"close")]
    if any(name == b"hx-request" for name, _ in scope["headers"]):
        headers.append((b"hx-redirect", b"/login"))
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
