"""X-Forwarded-For is believed only from the proxies the settings name (a real uvicorn)."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from app.cli import proxy_options
from app.db.models import AuditEvent
from app.main import create_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _failed_sign_in_address(settings) -> str:
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", **proxy_options(settings)
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            page = http.get("/login").text
            token = page.split('name="csrf_token" value="')[1].split('"')[0]
            http.post(
                "/login",
                data={"csrf_token": token, "username": "admin", "password": "wrong"},
                headers={"X-Forwarded-For": "203.0.113.9"},
            )
    finally:
        server.should_exit = True
        thread.join(10)
    with app.state.runtime.db.session() as session:
        event = session.scalar(
            select(AuditEvent).where(AuditEvent.outcome == "failure").order_by(AuditEvent.id)
        )
        return event.client_ip


@pytest.mark.parametrize(("trusted", "seen"), [([], "127.0.0.1"), (["127.0.0.1"], "203.0.113.9")])
def test_forwarded_for_only_from_trusted_proxies(settings, trusted, seen):
    settings = settings.model_copy(update={"trusted_proxies": trusted})
    assert _failed_sign_in_address(settings) == seen
