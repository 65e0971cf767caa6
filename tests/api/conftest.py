from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from app.accounts import create_token, create_user
from app.audit import Actor
from app.main import create_app
from app.security.roles import Role

TEST_ACTOR = Actor("test-setup", "system")


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def headers_for(app, client) -> Callable[[Role], dict[str, str]]:
    """API token headers for a fresh user with the given role."""
    made: dict[Role, dict[str, str]] = {}

    def _make(role: Role) -> dict[str, str]:
        if role not in made:
            with app.state.runtime.db.session() as session:
                user = create_user(session, TEST_ACTOR, f"user-{role}", "long-password-123", role)
                _, token = create_token(session, TEST_ACTOR, user, "tests", 1)
            made[role] = {"Authorization": f"Bearer {token}"}
        return made[role]

    return _make


@pytest.fixture
def admin(headers_for) -> dict[str, str]:
    return headers_for(Role.ADMIN)


def assert_problem(response, status: int, contains: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if contains:
        assert contains in body["detail"], body
    return body
