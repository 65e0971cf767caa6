"""Fixtures for dashboard tests through Starlette's TestClient: sign in, read CSRF tokens."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from app.accounts import create_user
from app.audit import Actor
from app.main import create_app
from app.security.roles import Role

ADMIN_PASSWORD = "admin-password-123"
USER_PASSWORD = "long-password-123"
SETUP = Actor("test-setup", "system")
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def sign_in(client: TestClient, username: str, password: str, next_url: str = "/"):
    token = csrf_from(client.get("/login").text)
    return client.post(
        "/login",
        data={"csrf_token": token, "username": username, "password": password, "next": next_url},
        follow_redirects=False,
    )


def form_token(client: TestClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return csrf_from(response.text)


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def make_user(app) -> Callable[[Role], str]:
    """Create a user with a role; returns the user name (password: USER_PASSWORD)."""

    def _make(role: Role, username: str | None = None) -> str:
        name = username or f"user-{role}"
        with app.state.runtime.db.session() as session:
            create_user(session, SETUP, name, USER_PASSWORD, role)
        return name

    return _make


@pytest.fixture
def admin_client(client) -> TestClient:
    response = sign_in(client, "admin", ADMIN_PASSWORD)
    assert response.status_code == 303, response.text
    return client


@pytest.fixture
def client_as(app, client, make_user) -> Callable[[Role], TestClient]:
    """Another browser (its own cookies), signed in as a fresh user of the given role.

    It shares the app that ``client`` started, so the lifespan runs once.
    """

    def _as(role: Role) -> TestClient:
        other = TestClient(app)
        assert sign_in(other, make_user(role), USER_PASSWORD).status_code == 303
        return other

    return _as
