"""Mail through the API and the job engine: a mail connection is tested like the others, a
mailbox policy's backup runs as a job on a worker with the ``mail`` capability, the archive is
searched, exported and held, and a deleted message is restored by a restore job."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from app.composition import load_handlers
from app.db.models import ExchangeDatabase, ExchangeServer, Job
from app.domain.protection import DatabaseLayout
from app.jobs import Worker
from app.jobs.handlers import registry as product_registry
from app.security.roles import Role
from tests.mailboxes.dovecot_fixture import Dovecot
from tests.mailboxes.helpers import folder_state, sha
from tests.mailboxes.mailgen import message

FAST = {
    "lease_seconds": 5.0,
    "heartbeat_interval": 0.2,
    "cancel_poll_interval": 0.05,
    "poll_interval": 0.05,
    "retry_base_s": 0.0,
}
T0 = datetime(2025, 9, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def server(dovecot: Dovecot):
    user = "apiuser"
    if user not in dovecot.users:
        dovecot.add_user(user)
    return dovecot, user


@pytest.fixture
def worker(app) -> Worker:
    load_handlers()
    return Worker(
        app.state.runtime, "mail-proxy", ["mail", "vcenter"], registry=product_registry, **FAST
    )


def run_all(worker: Worker) -> None:
    for _ in range(20):
        if worker.run_once() is None:
            return
    raise AssertionError("jobs keep coming")


def _connections(
    client, admin, tmp_path, dovecot: Dovecot, user: str, extra: tuple[str, ...] = ()
) -> tuple[int, int]:
    r = client.post(
        "/api/v1/connections",
        json={
            "name": "repo",
            "kind": "repository",
            "options": {"path": str(tmp_path / "repo"), "encrypted": True},
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    repo_id = r.json()["id"]
    # testing a repository connection initialises the repository
    assert client.post(f"/api/v1/connections/{repo_id}/test", headers=admin).json()["ok"]
    r = client.post(
        "/api/v1/connections",
        json={
            "name": "dovecot",
            "kind": "mail",
            "host": dovecot.host,
            "port": dovecot.port,
            "username": dovecot.master_user,
            "password": dovecot.master_password,
            "verify_tls": False,
            "trusted_thumbprint": dovecot.thumbprint,
            "options": {
                "tls": "starttls",
                "mailboxes": [user, *extra],
                "exchange_server": "EXCH-MAIL",
            },
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert "password" not in r.text and dovecot.master_password not in r.text
    return repo_id, r.json()["id"]


def test_mail_connection_test_signs_in_and_lists_mailboxes(client, admin, tmp_path, server):
    dovecot, user = server
    _, conn_id = _connections(client, admin, tmp_path, dovecot, user)
    r = client.post(f"/api/v1/connections/{conn_id}/test", headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and user in body["message"] and "CONDSTORE" in body["message"]
    assert client.get(f"/api/v1/connections/{conn_id}", headers=admin).json()["status"] == "ok"

    # a wrong password is reported, not raised
    client.patch(f"/api/v1/connections/{conn_id}", json={"password": "nope"}, headers=admin)
    body = client.post(f"/api/v1/connections/{conn_id}/test", headers=admin).json()
    assert body["ok"] is False and "refused" in body["message"]
    # bad options are a clear 422
    r = client.patch(
        f"/api/v1/connections/{conn_id}", json={"options": {"tls": "maybe"}}, headers=admin
    )
    assert r.status_code == 422 and "tls" in r.json()["detail"]


def _mail_policy(client, admin, app, tmp_path, dovecot, user, extra=()) -> int:
    repo_id, _conn_id = _connections(client, admin, tmp_path, dovecot, user, extra)
    with app.state.runtime.db.session() as s:
        exch = ExchangeServer(name="EXCH-MAIL")
        exch.databases = [ExchangeDatabase(name="DB01", layout=DatabaseLayout.VMDK)]
        s.add(exch)
        s.flush()
        server_id, db_id = exch.id, exch.databases[0].id
    r = client.post(
        "/api/v1/policies",
        json={
            "name": "mail hourly",
            "method": "mailbox",
            "consistency": "hot_application",
            "rpo_minutes": 60,
            "repository_id": repo_id,
            "compliance_retention_days": 2555,
            "targets": [{"server_id": server_id, "database_id": db_id}],
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    policy_id = r.json()["id"]
    return policy_id


def test_policy_backup_job_search_export_hold_and_restore(
    client, admin, headers_for, app, tmp_path, server, worker
):
    dovecot, user = server
    policy_id = _mail_policy(client, admin, app, tmp_path, dovecot, user)

    wanted = message(1, subject="Invoice 4711 from Contoso", body="invoice overdue")
    with dovecot_session(dovecot, user) as c:
        c.append("INBOX", wanted, ("\\Seen",), T0)
        c.append("INBOX", message(2, subject="Hello"), (), T0)

    def backup() -> dict:
        r = client.post(
            "/api/v1/jobs", json={"kind": "backup", "policy_id": policy_id}, headers=admin
        )
        assert r.status_code == 202, r.text
        run_all(worker)
        with app.state.runtime.db.session() as s:
            child = s.scalars(select(Job).where(Job.kind == "backup").order_by(Job.id.desc()))
            return client.get(f"/api/v1/jobs/{next(iter(child)).id}", headers=admin).json()

    done = backup()
    assert done["state"] == "succeeded", (done.get("error"), done.get("events"))
    mailboxes = client.get("/api/v1/mailboxes", headers=admin).json()["items"]
    (mbx,) = [m for m in mailboxes if m["name"] == user]
    assert mbx["backup_seq"] >= 1 and mbx["compliance_retention_days"] == 2555

    # the user deletes the invoice; the next backup notices
    with dovecot_session(dovecot, user) as c:
        c.select_folder("INBOX")
        data = c.fetch("1:*", ["BODY.PEEK[]"])
        c.delete_messages([u for u, d in data.items() if d[b"BODY[]"] == wanted])
        c.expunge()
    assert backup()["state"] == "succeeded"

    auditor = headers_for(Role.AUDITOR)
    r = client.get("/api/v1/archive/search", params={"terms": "invoice contoso"}, headers=auditor)
    assert r.status_code == 200, r.text
    found = r.json()
    assert found["total"] == 1
    hit = found["items"][0]
    assert hit["on_server"] is False and "<mark>" in hit["snippet_html"]

    r = client.get("/api/v1/archive/export", params={"terms": "overdue"}, headers=auditor)
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        (name,) = zf.namelist()
        assert sha(zf.read(name)) == sha(wanted)
    assert client.get("/api/v1/archive/export", headers=auditor).status_code == 422

    # restore operators may restore, auditors may not
    body = {"message_ids": [hit["id"]], "destination": {"where": "original"}}
    assert client.post("/api/v1/archive/restore", json=body, headers=auditor).status_code == 403
    r = client.post(
        "/api/v1/archive/restore", json=body, headers=headers_for(Role.RESTORE_OPERATOR)
    )
    assert r.status_code == 202, r.text
    run_all(worker)
    restored = client.get(f"/api/v1/jobs/{r.json()['job_id']}", headers=admin).json()
    assert restored["state"] == "succeeded", restored
    with dovecot_session(dovecot, user) as c:
        assert (sha(wanted), ("\\Seen",), T0.isoformat()) in folder_state(c, "INBOX")

    # a search hold, audited
    r = client.post(
        "/api/v1/archive/holds",
        json={"name": "contoso", "reason": "records request 12", "terms": "contoso"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert r.json()["scope"] == "search"
    assert (
        client.post(
            "/api/v1/archive/holds", json={"name": "x", "reason": "y"}, headers=admin
        ).status_code
        == 422
    )
    events = client.get(
        "/api/v1/audit-events", params={"action": "legal_hold.create"}, headers=admin
    ).json()
    assert events["total"] == 1

    # restore point browsing and mbox export
    points = client.get(f"/api/v1/mailboxes/{mbx['id']}/restore-points", headers=admin).json()
    first = points["items"][-1]
    folders = client.get(
        f"/api/v1/mailbox-restore-points/{first['id']}/folders", headers=admin
    ).json()
    assert folders == [{"name": "INBOX", "messages": 2}]
    msgs = client.get(
        f"/api/v1/mailbox-restore-points/{first['id']}/messages",
        params={"folder": "INBOX"},
        headers=admin,
    ).json()
    assert sorted(m["subject"] for m in msgs) == ["Hello", "Invoice 4711 from Contoso"]
    r = client.get(
        f"/api/v1/mailbox-restore-points/{first['id']}/export",
        params={"format": "mbox"},
        headers=admin,
    )
    assert r.status_code == 200 and r.content.count(b"\nFrom MAILER-DAEMON") + 1 == 2
    assert (
        client.get("/api/v1/mailbox-restore-points/999999/folders", headers=admin).status_code
        == 404
    )
    # one archived message as EML; bad input is a clear 422, never a 500
    r = client.get(f"/api/v1/archive/messages/{hit['id']}/eml", headers=auditor)
    assert r.status_code == 200 and sha(r.content) == sha(wanted)
    assert r.headers["content-type"].startswith("message/rfc822")
    bad = client.post(
        f"/api/v1/mailbox-restore-points/{first['id']}/restore",
        json={"destination": {"where": "folder"}},
        headers=admin,
    )
    assert bad.status_code == 422 and "folder" in bad.text
    bad = client.get("/api/v1/archive/search", params={"sent_from": "soon"}, headers=admin)
    assert bad.status_code == 422
    bad = client.get(
        "/api/v1/archive/search",
        params={"sent_from": "2026-02-01T00:00:00Z", "sent_to": "2026-01-01T00:00:00Z"},
        headers=admin,
    )
    assert bad.status_code == 422 and "sent_from" in bad.text


def test_a_mailbox_that_cannot_be_read_makes_the_backup_partial(
    client, admin, app, tmp_path, server, worker
):
    dovecot, user = server
    policy_id = _mail_policy(client, admin, app, tmp_path, dovecot, user, extra=("ghost",))
    r = client.post("/api/v1/jobs", json={"kind": "backup", "policy_id": policy_id}, headers=admin)
    run_all(worker)
    with app.state.runtime.db.session() as s:
        child = s.scalar(select(Job).where(Job.kind == "backup").order_by(Job.id.desc()))
        child_id = child.id
    assert r.status_code == 202
    job = client.get(f"/api/v1/jobs/{child_id}", headers=admin).json()
    assert job["state"] == "partially_succeeded", job
    assert any("ghost" in e["message"] for e in job["events"] if e["level"] == "warning")
    assert [m["name"] for m in client.get("/api/v1/mailboxes", headers=admin).json()["items"]] == [
        user
    ]


def test_mail_endpoints_need_a_user(client):
    assert client.get("/api/v1/archive/search").status_code == 401
    assert client.get("/api/v1/mailboxes").status_code == 401


class dovecot_session:  # noqa: N801 - reads as a context manager
    def __init__(self, dovecot: Dovecot, user: str):
        from imapclient import IMAPClient

        self.client = IMAPClient(dovecot.host, dovecot.port, ssl=False)
        self.client.login(user, dovecot.users[user])
        self.client.normalise_times = False

    def __enter__(self):
        return self.client

    def __exit__(self, *exc):
        self.client.logout()
