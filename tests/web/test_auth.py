"""Sign-in, sign-out, redirects to the sign-in page, CSRF and throttling."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db.models import AuditEvent, User
from tests.web.conftest import ADMIN_PASSWORD, csrf_from, form_token, sign_in


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/", "/login"),
        ("/connections", "/login?next=%2Fconnections"),
        ("/connections?kind=vcenter", "/login?next=%2Fconnections%3Fkind%3Dvcenter"),
        ("/policies/new", "/login?next=%2Fpolicies%2Fnew"),
        ("/jobs/1", "/login?next=%2Fjobs%2F1"),
        ("/audit", "/login?next=%2Faudit"),
    ],
)
def test_pages_redirect_to_sign_in(client, path, location):
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == location


def test_htmx_requests_are_told_to_redirect(client):
    response = client.get("/partials/recent-jobs", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert response.headers["HX-Redirect"] == "/login?next=%2Fpartials%2Frecent-jobs"
    assert response.text == ""


def test_posts_without_a_session_go_to_sign_in(client):
    response = client.post("/connections/new", data={"name": "x"}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")


def test_sign_in_and_out(client):
    page = client.get("/login")
    assert page.status_code == 200
    assert 'name="csrf_token"' in page.text and 'autocomplete="current-password"' in page.text

    response = sign_in(client, "admin", ADMIN_PASSWORD, "/connections")
    assert response.status_code == 303 and response.headers["location"] == "/connections"
    overview = client.get("/")
    assert overview.status_code == 200
    assert "Sign out" in overview.text and "admin" in overview.text

    # Signing out is a POST with the page's CSRF token.
    token = csrf_from(overview.text)
    assert client.post("/logout", follow_redirects=False).status_code == 403
    response = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert "You are signed out." in client.get("/login").text
    assert client.get("/", follow_redirects=False).status_code == 303


def test_signed_in_user_visiting_login_goes_on(admin_client):
    response = admin_client.get("/login?next=/jobs", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/jobs"


def test_wrong_password_is_refused_and_audited(app, client):
    response = sign_in(client, "admin", "wrong-password")
    assert response.status_code == 401
    assert "Wrong user name or password." in response.text
    assert 'value="admin"' in response.text  # the user name is kept
    assert "wrong-password" not in response.text
    assert client.get("/", follow_redirects=False).status_code == 303
    with app.state.runtime.db.session() as session:
        outcomes = session.scalars(
            select(AuditEvent.outcome).where(AuditEvent.action == "auth.sign_in")
        ).all()
    assert outcomes == ["failure"]


def test_unknown_user_gets_the_same_message(client):
    response = sign_in(client, "nobody", "whatever-password")
    assert response.status_code == 401
    assert "Wrong user name or password." in response.text


def test_too_many_failures_are_throttled(client, settings):
    for _ in range(settings.login_max_failures):
        assert sign_in(client, "admin", "wrong-password").status_code == 401
    response = sign_in(client, "admin", ADMIN_PASSWORD)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "too many failed sign-ins" in response.text.lower()


def test_sign_in_form_needs_its_csrf_token(client):
    client.get("/login")
    response = client.post(
        "/login",
        data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": "forged"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "form expired" in response.text
    assert client.get("/", follow_redirects=False).status_code == 303


def test_csrf_token_changes_on_sign_in(client):
    before = form_token(client, "/login")
    sign_in(client, "admin", ADMIN_PASSWORD)
    after = form_token(client, "/")
    assert before != after


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", ""],
)
def test_only_local_next_targets_are_followed(client, target):
    response = sign_in(client, "admin", ADMIN_PASSWORD, target)
    assert response.status_code == 303
    assert response.headers["location"] == "/"


def test_a_deactivated_user_is_signed_out(app, admin_client):
    with app.state.runtime.db.session() as session:
        session.scalar(select(User).where(User.username == "admin")).is_active = False
    response = admin_client.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
