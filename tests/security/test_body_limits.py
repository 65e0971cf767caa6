"""Request bodies: nobody's body is read before they are known, and none past its limit.

Driven at the ASGI level, where we can count the bytes the application pulled."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest

from app.security.guard import DEFAULT_LIMIT

FIFTY_MB = 50 << 20
CHUNK = 64 << 10


def _call(app, method: str, path: str, headers: dict[str, str], size: int, *, declare=True):
    """Send a ``size``-byte body in chunks; returns (status, response headers, bytes read)."""
    read = 0
    sent = {"status": None, "headers": {}}

    async def receive():
        nonlocal read
        if read >= size:
            await anyio.sleep(3600)  # the client has nothing more to say
        chunk = min(CHUNK, size - read)
        read += chunk
        return {"type": "http.request", "body": b" " * chunk, "more_body": read < size}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
            sent["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if declare:
        raw.append((b"content-length", str(size).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def run():
        with anyio.fail_after(30):
            await app(scope, receive, send)

    # A thread of its own: after the browser tests, Playwright's event loop holds this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(anyio.run, run).result()
    return sent["status"], sent["headers"], read


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/api/v1/policies", "application/json"),
        ("/connections/new", "application/x-www-form-urlencoded"),
    ],
)
def test_a_stranger_s_50_mb_post_is_refused_unread(app, client, path, content_type):
    status, headers, read = _call(app, "POST", path, {"content-type": content_type}, FIFTY_MB)
    assert read == 0
    if path.startswith("/api/"):
        assert status == 401 and headers["content-type"] == "application/problem+json"
    else:
        assert status == 303 and headers["location"] == "/login"


def test_a_bogus_token_is_refused_before_the_body(app, client):
    status, _, read = _call(
        app,
        "POST",
        "/api/v1/policies",
        {"content-type": "application/json", "authorization": "Bearer bwk_not-a-token"},
        FIFTY_MB,
    )
    assert (status, read) == (401, 0)


def test_the_sign_in_form_takes_a_small_body_only(app, client):
    ctype = {"content-type": "application/x-www-form-urlencoded"}
    status, _, read = _call(app, "POST", "/login", ctype, FIFTY_MB)
    assert (status, read) == (413, 0)


def test_a_known_caller_is_held_to_the_limit_too(app, client, admin):
    headers = {"content-type": "application/json", **admin}
    status, _, read = _call(app, "POST", "/api/v1/policies", headers, FIFTY_MB)
    assert (status, read) == (413, 0)
    # No length announced (chunked): read up to the limit, then refused.
    status, _, read = _call(app, "POST", "/api/v1/policies", headers, FIFTY_MB, declare=False)
    assert status == 413 and read <= DEFAULT_LIMIT + CHUNK
