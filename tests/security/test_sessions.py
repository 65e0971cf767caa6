"""Sessions are bound to their user for good, and end on the server when they should."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.accounts import create_user
from app.security.roles import Role
from tests.web.conftest import ADMIN_PASSWORD, SETUP, USER_PASSWORD, csrf_from, sign_in

COOKIE = "bulwark_session"


def _copy(app, client: TestClient) -> TestClient:
    """Another browser holding a copy of ``client``'s session cookie."""
    other = TestClient(app)
    other.cookies.set(COOKIE, client.cookies.get(COOKIE))
    return other


def _signed_in(client: TestClient) -> bool:
    return client.get("/api/v1/me").status_code == 200


def _user_id(app, username: str) -> int:
    from sqlalchemy import select

    from app.db.models import User

    with app.state.runtime.db.session() as s:
        return s.scalar(select(User.id).where(User.username == username))


def test_a_deleted_users_cookie_never_signs_in_as_the_next_user(app, client, admin, make_user):
    make_user(Role.AUDITOR, "auditor")
    auditor = TestClient(app)
    assert sign_in(auditor, "auditor", USER_PASSWORD).status_code == 303
    old_id = _user_id(app, "auditor")
    assert client.delete(f"/api/v1/users/{old_id}", headers=admin).status_code == 204

    created = client.post(
        "/api/v1/users",
        json={"username": "newadmin", "password": "a-long-password", "role": "admin"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    # The id is never handed out again, and the old cookie is nobody's session.
    assert created.json()["id"] > old_id
    assert not _signed_in(auditor)


def test_user_ids_are_not_reused_after_deleting_the_newest(app):
    with app.state.runtime.db.session() as s:
        first = create_user(s, SETUP, "one", USER_PASSWORD, Role.AUDITOR)
        first_id = first.id
        s.delete(first)
    with app.state.runtime.db.session() as s:
        assert create_user(s, SETUP, "two", USER_PASSWORD, Role.AUDITOR).id > first_id


def test_signing_out_ends_a_copied_cookie(app, admin_client):
    stolen = _copy(app, admin_client)
    assert _signed_in(stolen)
    token = csrf_from(admin_client.get("/").text)
    assert admin_client.post("/logout", data={"csrf_token": token}).status_code == 200
    assert not _signed_in(stolen)


def test_a_password_change_ends_other_sessions_and_keeps_this_one(app, admin_client):
    stolen = _copy(app, admin_client)
    token = csrf_from(admin_client.get("/").text)
    response = admin_client.post(
        "/api/v1/me/password",
        json={"current_password": ADMIN_PASSWORD, "new_password": "another-long-password"},
        headers={"X-CSRF-Token": token},
    )
    assert response.status_code == 204, response.text
    assert _signed_in(admin_client)
    assert not _signed_in(stolen)


def test_an_admin_reset_or_end_sessions_signs_the_user_out(app, client, admin, make_user):
    make_user(Role.OPERATOR, "op")
    op_browser = TestClient(app)
    assert sign_in(op_browser, "op", USER_PASSWORD).status_code == 303
    op_id = _user_id(app, "op")
    response = client.patch(
        f"/api/v1/users/{op_id}", json={"password": "reset-long-password"}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert not _signed_in(op_browser)

    assert sign_in(op_browser, "op", "reset-long-password").status_code == 303
    assert _signed_in(op_browser)
    assert client.delete(f"/api/v1/users/{op_id}/sessions", headers=admin).status_code == 204
    assert not _signed_in(op_browser)
    # Only admins end sessions.
    op_token = client.post("/api/v1/tokens", json={"name": "t"}, headers=admin)
    assert op_token.status_code == 201
    assert client.delete(f"/api/v1/users/{op_id}/sessions").status_code == 401


def test_password_changes_are_throttled(client, headers_for):
    operator = headers_for(Role.OPERATOR)
    wrong = {"current_password": "not-it-at-all", "new_password": "another-long-password"}
    statuses = [
        client.post("/api/v1/me/password", json=wrong, headers=operator).status_code
        for _ in range(6)
    ]
    assert statuses[:5] == [403] * 5 and statuses[5] == 429
    right = {"current_password": USER_PASSWORD, "new_password": "another-long-password"}
    response = client.post("/api/v1/me/password", json=right, headers=operator)
    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0
