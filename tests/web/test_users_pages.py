"""Users and API tokens in the dashboard: admins manage users; everyone their own tokens."""

from __future__ import annotations

import re

from sqlalchemy import select

from app.db.models import ApiToken, User
from app.security.roles import Role
from tests.web.conftest import csrf_from, form_token, sign_in


def _user_id(app, username: str) -> int:
    with app.state.runtime.db.session() as s:
        return s.scalar(select(User.id).where(User.username == username))


def test_an_admin_creates_changes_resets_and_signs_out_a_user(app, admin_client, client):
    token = form_token(admin_client, "/users/new")
    r = admin_client.post(
        "/users/new",
        data={"csrf_token": token, "username": "jane", "password": "short", "role": "operator"},
        follow_redirects=False,
    )
    assert r.status_code == 422 and "Use at least 12 characters." in r.text
    r = admin_client.post(
        "/users/new",
        data={
            "csrf_token": token,
            "username": "jane",
            "full_name": "Jane Doe",
            "password": "jane-password-1",
            "role": "operator",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    jane_id = _user_id(app, "jane")
    assert "jane" in admin_client.get("/users").text

    # Jane signs in elsewhere; the admin demotes her: her session ends.
    from fastapi.testclient import TestClient

    jane = TestClient(app)
    assert sign_in(jane, "jane", "jane-password-1").status_code == 303
    assert jane.get("/policies", follow_redirects=False).status_code == 200
    page = admin_client.get(f"/users/{jane_id}").text
    r = admin_client.post(
        f"/users/{jane_id}",
        data={"csrf_token": csrf_from(page), "role": "auditor", "is_active": "1"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert jane.get("/policies", follow_redirects=False).status_code == 303  # to /login
    with app.state.runtime.db.session() as s:
        assert s.get(User, jane_id).role == Role.AUDITOR

    # A reset password ends sessions too, and the new one works.
    assert sign_in(jane, "jane", "jane-password-1").status_code == 303
    r = admin_client.post(
        f"/users/{jane_id}/password",
        data={"csrf_token": csrf_from(page), "password": "jane-password-2"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert jane.get("/", follow_redirects=False).status_code == 303
    assert sign_in(jane, "jane", "jane-password-2").status_code == 303
    r = admin_client.post(
        f"/users/{jane_id}/sessions", data={"csrf_token": csrf_from(page)}, follow_redirects=False
    )
    assert r.status_code == 303 and jane.get("/", follow_redirects=False).status_code == 303

    # The last admin cannot be demoted.
    admin_id = _user_id(app, "admin")
    r = admin_client.post(
        f"/users/{admin_id}",
        data={"csrf_token": csrf_from(page), "role": "operator", "is_active": "1"},
        follow_redirects=False,
    )
    assert r.status_code == 409 and "last active admin" in r.text


def test_everyone_makes_and_revokes_their_own_tokens_once_shown(app, client_as, admin_client):
    operator = client_as(Role.OPERATOR)
    assert operator.get("/users").status_code == 403
    page = operator.get("/account").text
    r = operator.post(
        "/account/tokens",
        data={"csrf_token": csrf_from(page), "name": "monitoring", "expires_in_days": "90"},
    )
    assert r.status_code == 200
    shown = re.search(r'<code class="secret">(bwk_[^<]+)</code>', r.text).group(1)
    again = operator.get("/account").text
    assert shown not in again and "monitoring" in again  # shown once
    assert (
        operator.get("/api/v1/me", headers={"Authorization": f"Bearer {shown}"}).json()["role"]
        == "operator"
    )

    with app.state.runtime.db.session() as s:
        row = s.scalar(select(ApiToken).where(ApiToken.name == "monitoring"))
    # Another user's token is not theirs to revoke; the admin sees it in the list.
    auditor = client_as(Role.AUDITOR)
    r = auditor.post(
        f"/tokens/{row.id}/revoke",
        data={"csrf_token": csrf_from(auditor.get("/account").text)},
        follow_redirects=False,
    )
    assert r.status_code == 404
    assert "monitoring" in admin_client.get("/users").text
    r = operator.post(
        f"/tokens/{row.id}/revoke", data={"csrf_token": csrf_from(again)}, follow_redirects=False
    )
    assert r.status_code == 303
    assert (
        operator.get("/api/v1/me", headers={"Authorization": f"Bearer {shown}"}).status_code == 401
    )
