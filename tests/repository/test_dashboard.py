"""The dashboard: add a repository on the connections page, test it, see usage and queue jobs."""

from __future__ import annotations

from sqlalchemy import select

from app.db.models import Job
from app.domain.jobs import JobKind
from app.security.roles import Role
from tests.web.conftest import csrf_from, form_token, sign_in

ADMIN_PASSWORD = "admin-password-123"


def test_add_test_and_use_a_repository_from_the_dashboard(app, client, tmp_path):
    assert sign_in(client, "admin", ADMIN_PASSWORD).status_code == 303
    token = form_token(client, "/connections/new?kind=repository")
    r = client.post(
        "/connections/new",
        follow_redirects=False,
        data={
            "csrf_token": token,
            "name": "library",
            "kind": "repository",
            "options": f"path = {tmp_path / 'lib'}\nencrypted = true",
        },
    )
    assert r.status_code == 303, r.text
    detail = r.headers["location"]
    page = client.get(detail).text
    assert "Test connection" in page
    r = client.post(f"{detail}/test", data={"csrf_token": csrf_from(page)}, follow_redirects=True)
    assert "is writable" in r.text
    assert (tmp_path / "lib" / "config").exists()
    page = client.get("/repositories").text
    assert "library" in page and "Verified RPO" in page and "encrypted" in page
    repo_id = int(detail.rsplit("/", 1)[-1])
    token = csrf_from(page)
    for action, data in (("verify", {"sample": "0.1"}), ("expire", {}), ("measure", {})):
        r = client.post(
            f"/repositories/{repo_id}/{action}",
            follow_redirects=True,
            data={"csrf_token": token, **data},
        )
        assert r.status_code == 200
    assert "Measured: 0 images in 0 chunks." in r.text
    with app.state.runtime.db.session() as session:
        jobs = session.scalars(select(Job).order_by(Job.id)).all()
        assert [(j.kind, j.params) for j in jobs] == [
            (JobKind.VERIFY, {"sample": 0.1, "repository_id": repo_id}),
            (JobKind.EXPIRE, {"repository_id": repo_id}),
        ]


def test_a_bad_path_is_said_next_to_the_options(client):
    assert sign_in(client, "admin", ADMIN_PASSWORD).status_code == 303
    token = form_token(client, "/connections/new?kind=repository")
    r = client.post(
        "/connections/new",
        data={
            "csrf_token": token,
            "name": "library",
            "kind": "repository",
            "options": "path = relative/dir",
        },
    )
    assert r.status_code == 422 and "absolute directory" in r.text


def test_repository_actions_need_csrf_and_the_right_role(app, client, tmp_path):
    from app.accounts import create_user
    from app.audit import Actor

    with app.state.runtime.db.session() as session:
        create_user(session, Actor("t", "system"), "auditor", "long-password-123", Role.AUDITOR)
    assert sign_in(client, "auditor", "long-password-123").status_code == 303
    page = client.get("/repositories")
    assert page.status_code == 200 and "Expire and collect garbage" not in page.text
    r = client.post("/repositories/1/expire", data={"csrf_token": csrf_from(page.text)})
    assert r.status_code == 403
    r = client.post("/repositories/1/expire", data={})
    assert r.status_code == 403 and "CSRF" in r.text
