"""The dashboard's mail pages: mailbox list with last backup, the restore wizard's steps,
the archive search with highlighted snippets, and holds placed from a search or a mailbox."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db.models import AuditEvent, Job, LegalHold
from app.main import create_app
from tests.mailboxes.mailgen import message
from tests.web.conftest import ADMIN_PASSWORD, csrf_from, sign_in

T0 = datetime(2025, 2, 2, 2, 2, tzinfo=UTC)


@pytest.fixture
def browser(settings):
    with TestClient(create_app(settings)) as c:
        assert sign_in(c, "admin", ADMIN_PASSWORD).status_code == 303
        yield c


@pytest.mark.parametrize("imap_server", ["condstore"], indirect=True)
def test_mail_pages_from_list_to_restore_job(mail_env, browser):
    env = mail_env
    env.append(
        message(1, subject="Quarterly <b>numbers</b>", body="the falcon numbers"),
        folder="Finanzen/Übersicht",
        when=T0,
    )
    env.append(message(2, subject="Lunch"), when=T0)
    first = env.backup()

    page = browser.get("/mailboxes")
    assert page.status_code == 200 and env.user in page.text and "Restore…" in page.text
    detail = browser.get(f"/mailboxes/{first.mailbox_id}")
    assert detail.status_code == 200 and "Restore from here" in detail.text

    wizard = browser.get(f"/mailboxes/{first.mailbox_id}/restore")
    assert "#1" in wizard.text
    step2 = browser.get(
        f"/mailboxes/{first.mailbox_id}/restore",
        params={"point": first.restore_point_id, "folder": "Finanzen/Übersicht"},
    )
    assert step2.status_code == 200
    assert "Quarterly &lt;b&gt;numbers&lt;/b&gt;" in step2.text  # escaped, never markup
    assert "Lunch" not in step2.text
    r = browser.post(
        f"/mailboxes/{first.mailbox_id}/restore",
        data={
            "csrf_token": csrf_from(step2.text),
            "point": str(first.restore_point_id),
            "folder": "Finanzen/Übersicht",
            "scope": "folder",
            "where": "recovered",
            "target_mailbox": env.other,
        },
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/jobs/")
    with env.db.session() as s:
        job = s.scalar(select(Job).order_by(Job.id.desc()))
        assert job.params["mode"] == "mailbox"
        assert job.params["destination"] == {
            "mailbox": env.other,
            "where": "recovered",
            "folder": None,
        }
        assert job.params["folders"] == ["Finanzen/Übersicht"]

    found = browser.get("/archive", params={"terms": "falcon"})
    assert found.status_code == 200
    assert 'id="result-count">1<' in found.text and "<mark>falcon</mark>" in found.text
    with env.db.session() as s:
        search = s.scalar(select(AuditEvent).where(AuditEvent.action == "archive.search"))
        assert search is not None and search.detail["terms"] == "falcon"
    r = browser.post(
        "/archive/hold",
        data={
            "csrf_token": csrf_from(found.text),
            "back_query": "terms=falcon",
            "name": "falcon-hold",
            "reason": "records request",
            "terms": "falcon",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    r = browser.post(
        f"/mailboxes/{first.mailbox_id}/hold",
        data={"csrf_token": csrf_from(found.text), "name": "mbx-hold", "reason": "litigation"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    with env.db.session() as s:
        holds = {h.name: h for h in s.scalars(select(LegalHold))}
        assert json.loads(holds["falcon-hold"].search_query)["terms"] == "falcon"
        assert holds["mbx-hold"].scope == "mailbox" and holds["mbx-hold"].mailbox == env.user
    # a form without its CSRF token is refused
    r = browser.post(
        "/archive/hold", data={"name": "x", "reason": "y", "terms": "z"}, follow_redirects=False
    )
    assert r.status_code == 403


def test_mail_connection_added_and_tested_from_the_dashboard(browser, dovecot):
    user = "dashuser"
    if user not in dovecot.users:
        dovecot.add_user(user)
    form = browser.get("/connections/new?kind=mail")
    assert form.status_code == 200
    r = browser.post(
        "/connections/new",
        data={
            "csrf_token": csrf_from(form.text),
            "name": "dovecot-dash",
            "kind": "mail",
            "host": dovecot.host,
            "port": str(dovecot.tls_port),
            "username": dovecot.master_user,
            "password": dovecot.master_password,
            "trusted_thumbprint": dovecot.thumbprint,
            "options": f'tls = tls\nmailboxes = ["{user}"]\nexchange_server = EXCH01',
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    detail = browser.get(r.headers["location"])
    test = browser.post(
        r.headers["location"] + "/test",
        data={"csrf_token": csrf_from(detail.text)},
        follow_redirects=True,
    )
    shown = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", test.text))
    assert "Signed in" in test.text and f"{user} (1 folders)" in test.text, shown[-1500:]

    # options a mail connection cannot have are refused with the reason, next to the field
    bad = browser.post(
        "/connections/new",
        data={
            "csrf_token": csrf_from(form.text),
            "name": "dovecot-bad",
            "kind": "mail",
            "host": dovecot.host,
            "options": "tls = sometimes",
        },
    )
    assert bad.status_code == 422 and "tls" in bad.text
