"""Users, API tokens and sign-in throttling."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.db.models import ApiToken
from app.db.types import utcnow
from tests.api.conftest import assert_problem


def test_token_is_shown_once_and_stored_hashed(app, client, admin):
    r = client.post(
        "/api/v1/tokens", json={"name": "monitoring", "expires_in_days": 30}, headers=admin
    )
    assert r.status_code == 201
    token = r.json()["token"]
    assert token.startswith("bwk_") and r.json()["prefix"] == token[:12]
    listed = client.get("/api/v1/tokens", headers=admin).json()["items"]
    assert all("token" not in t for t in listed)
    with app.state.runtime.db.session() as session:
        hashes = session.scalars(select(ApiToken.token_hash)).all()
    assert token not in hashes
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_revoked_and_expired_tokens_are_refused(app, client, admin):
    made = client.post("/api/v1/tokens", json={"name": "ci"}, headers=admin).json()
    bearer = {"Authorization": f"Bearer {made['token']}"}
    assert client.delete(f"/api/v1/tokens/{made['id']}", headers=admin).status_code == 204
    assert_problem(client.get("/api/v1/me", headers=bearer), 401, "revoked")

    made = client.post("/api/v1/tokens", json={"name": "old"}, headers=admin).json()
    with app.state.runtime.db.session() as session:
        session.get(ApiToken, made["id"]).expires_at = utcnow() - timedelta(seconds=1)
    assert_problem(
        client.get("/api/v1/me", headers={"Authorization": f"Bearer {made['token']}"}), 401
    )
    assert_problem(client.get("/api/v1/me", headers={"Authorization": "Bearer bwk_nonsense"}), 401)


def test_users_cannot_touch_other_users_tokens(client, admin, headers_for):
    from app.security.roles import Role

    op = headers_for(Role.OPERATOR)
    theirs = client.post("/api/v1/tokens", json={"name": "admin-only"}, headers=admin).json()
    assert_problem(client.delete(f"/api/v1/tokens/{theirs['id']}", headers=op), 404)
    assert_problem(client.post("/api/v1/tokens", json={"name": "x", "user_id": 1}, headers=op), 403)
    assert client.get("/api/v1/tokens", headers=op).json()["total"] == 1  # only its own


def test_user_management(client, admin):
    r = client.post(
        "/api/v1/users",
        headers=admin,
        json={"username": "alice", "password": "alice-password-1", "role": "restore-operator"},
    )
    assert r.status_code == 201 and "password" not in r.json() and "password_hash" not in r.json()
    uid = r.json()["id"]
    assert_problem(
        client.post(
            "/api/v1/users",
            headers=admin,
            json={"username": "alice", "password": "alice-password-1", "role": "auditor"},
        ),
        409,
    )
    assert_problem(
        client.post(
            "/api/v1/users",
            headers=admin,
            json={"username": "bob", "password": "short", "role": "auditor"},
        ),
        422,
        "password",
    )
    assert_problem(
        client.post(
            "/api/v1/users",
            headers=admin,
            json={"username": "bob", "password": "long-enough-pw", "role": "god"},
        ),
        422,
    )
    r = client.patch(f"/api/v1/users/{uid}", headers=admin, json={"role": "operator"})
    assert r.json()["role"] == "operator"
    assert client.delete(f"/api/v1/users/{uid}", headers=admin).status_code == 204


def test_last_admin_is_protected(client, admin):
    me = client.get("/api/v1/me", headers=admin).json()
    users = client.get("/api/v1/users?role=admin", headers=admin).json()["items"]
    for u in users:
        if u["id"] != me["id"]:
            client.patch(f"/api/v1/users/{u['id']}", headers=admin, json={"is_active": False})
    assert_problem(
        client.patch(f"/api/v1/users/{me['id']}", headers=admin, json={"role": "auditor"}),
        409,
        "last active admin",
    )
    assert_problem(client.delete(f"/api/v1/users/{me['id']}", headers=admin), 409, "yourself")


def test_password_change_needs_current_password(client, admin):
    assert_problem(
        client.post(
            "/api/v1/me/password",
            headers=admin,
            json={"current_password": "wrong", "new_password": "a-new-long-password"},
        ),
        403,
    )
    r = client.post(
        "/api/v1/me/password",
        headers=admin,
        json={"current_password": "long-password-123", "new_password": "a-new-long-password"},
    )
    assert r.status_code == 204
