"""Mail in a real browser: a message the user deleted is found in the archive (marked deleted,
the search words highlighted) and restored into the user's mailbox by a restore job that the
service's own worker runs against Dovecot.

The backups that fill the archive are set up through the REST API (a mail connection, a
repository, a mailbox-level policy, two backup jobs); the browser does the auditor's and
restore operator's part.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from imapclient import IMAPClient
from playwright.sync_api import Page, expect
from sqlalchemy import select

from app.accounts import create_token
from app.audit import Actor
from app.db.models import ExchangeDatabase, ExchangeServer, User
from app.db.session import Database
from app.domain.protection import DatabaseLayout
from tests.e2e.test_dashboard import shot
from tests.mailboxes.dovecot_fixture import (
    DovecotUnavailable,
    must_have_dovecot,
    running_dovecot,
)
from tests.mailboxes.helpers import folder_state, sha
from tests.mailboxes.mailgen import message

pytestmark = pytest.mark.e2e
T0 = datetime(2025, 11, 3, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def dovecot():
    try:
        with running_dovecot() as server:
            yield server
    except DovecotUnavailable as exc:
        if must_have_dovecot():
            pytest.fail(f"Dovecot is required in CI: {exc}")
        pytest.skip(f"Dovecot unavailable: {exc}")


def _api(jobs_server) -> httpx.Client:
    db = Database(jobs_server.database_url)
    with db.session() as s:
        admin = s.scalar(select(User).where(User.username == "admin"))
        _, token = create_token(s, Actor("e2e", "system"), admin, f"mail-{uuid.uuid4().hex[:6]}", 1)
    db.dispose()
    return httpx.Client(
        base_url=jobs_server.url + "/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _wait(api: httpx.Client, job_id: int) -> dict:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def _session(dovecot, user):
    client = IMAPClient(dovecot.host, dovecot.port, ssl=False)
    client.login(user, dovecot.users[user])
    client.normalise_times = False
    return client


def test_find_a_deleted_message_in_the_archive_and_restore_it(
    jobs_page: Page, jobs_server, dovecot, tmp_path, screenshots
):
    tag = uuid.uuid4().hex[:6]
    user = f"ceo{tag}"
    dovecot.add_user(user)
    secret = f"Merger term sheet {tag}"
    wanted = message(1, subject=secret, body=f"the kestrel{tag} acquisition closes Friday")
    with _session(dovecot, user) as c:
        c.append("INBOX", wanted, ["\\Seen", "\\Flagged"], T0)
        c.append("INBOX", message(2, subject="Canteen menu"), [], T0)

    api = _api(jobs_server)
    repo = api.post(
        "/connections",
        json={
            "name": f"repo-{tag}",
            "kind": "repository",
            "options": {"path": str(tmp_path / "repo"), "encrypted": True},
        },
    )
    assert repo.status_code == 201, repo.text
    assert api.post(f"/connections/{repo.json()['id']}/test").json()["ok"]
    exchange = f"EXCH-{tag}"
    mail = api.post(
        "/connections",
        json={
            "name": f"mail-{tag}",
            "kind": "mail",
            "host": dovecot.host,
            "port": dovecot.port,
            "username": dovecot.master_user,
            "password": dovecot.master_password,
            "verify_tls": False,
            "trusted_thumbprint": dovecot.thumbprint,
            "options": {"tls": "starttls", "mailboxes": [user], "exchange_server": exchange},
        },
    )
    assert mail.status_code == 201, mail.text
    db = Database(jobs_server.database_url)
    with db.session() as s:
        server = ExchangeServer(name=exchange)
        server.databases = [ExchangeDatabase(name="DB01", layout=DatabaseLayout.VMDK)]
        s.add(server)
        s.flush()
        target = {"server_id": server.id, "database_id": server.databases[0].id}
    db.dispose()
    policy = api.post(
        "/policies",
        json={
            "name": f"mail-{tag}",
            "method": "mailbox",
            "consistency": "hot_application",
            "rpo_minutes": 60,
            "repository_id": repo.json()["id"],
            "compliance_retention_days": 2555,
            "targets": [target],
        },
    )
    assert policy.status_code == 201, policy.text

    def backup():
        job = api.post("/jobs", json={"kind": "backup", "policy_id": policy.json()["id"]})
        assert job.status_code == 202, job.text
        assert _wait(api, job.json()["id"])["state"] == "succeeded"
        time.sleep(0.3)  # the policy-wide job queued the mailbox job: let it run
        for j in api.get("/jobs", params={"kind": "backup", "limit": 5}).json()["items"]:
            assert _wait(api, j["id"])["state"] == "succeeded"

    backup()
    with _session(dovecot, user) as c:  # the user deletes it
        c.select_folder("INBOX")
        uids = [u for u, d in c.fetch("1:*", ["BODY.PEEK[]"]).items() if d[b"BODY[]"] == wanted]
        c.delete_messages(uids)
        c.expunge()
    backup()

    page = jobs_page
    page.get_by_role("link", name="Archive").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Archive")
    page.get_by_label("Words").fill(f"kestrel{tag}")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#result-count")).to_have_text("1")
    row = page.locator("tr.hit", has_text=secret)
    expect(row.locator("mark")).to_have_text(f"kestrel{tag}")
    expect(row.get_by_text("Deleted")).to_be_visible()
    shot(page, screenshots, "mail-01-archive-deleted-message")

    row.get_by_role("checkbox").check()
    page.get_by_role("button", name="Restore selected").click()
    page.wait_for_url("**/jobs/*")
    job_id = int(page.url.rstrip("/").rsplit("/", 1)[-1])
    assert _wait(api, job_id)["state"] == "succeeded"
    page.reload()
    shot(page, screenshots, "mail-02-restore-job")

    with _session(dovecot, user) as c:
        inbox = folder_state(c, "INBOX")
    assert (sha(wanted), ("\\Flagged", "\\Seen"), T0.isoformat()) in inbox
