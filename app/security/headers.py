"""Headers on every API answer: its JSON is never sniffed as something else, and answers that
hold inventory, audit lines or a new token are never kept in a cache."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import API_PREFIX

API_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]


class ApiHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path.startswith(API_PREFIX) or path in ("/metrics", "/healthz", "/readyz")):
            await self.app(scope, receive, send)
            return

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in API_HEADERS if k not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, _send)
