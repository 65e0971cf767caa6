"""Failure and RPO-breach notifications, received by a real HTTP endpoint and a real SMTP
server on loopback."""

from __future__ import annotations

import json
import socket
import threading
from datetime import timedelta
from email import message_from_bytes
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from app.db.models import Job, Policy, PolicyTarget, RestorePoint
from app.db.types import utcnow
from app.domain.jobs import JobKind, JobState
from app.domain.protection import Consistency, ProtectionMethod
from app.domain.rpo import objective_s
from app.jobs.scheduler import Scheduler
from app.notifications import SIGNATURE_HEADER, Notifier, sign

SECRET = "webhook-secret-0123456789"


@pytest.fixture
def webhook():
    received: list[tuple[dict, bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


@pytest.fixture
def smtp():
    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
            received.append(envelope)
            return "250 OK"

    with socket.socket() as probe:  # aiosmtpd wants a real port to check it started
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, received
    controller.stop()


def allow_loopback_webhooks(client, admin) -> None:
    """The receiver listens on loopback, which webhooks may reach only when an admin says so."""
    change = {"webhook_allowed_networks": ["127.0.0.0/8", "0.0.0.0/0"]}
    response = client.patch("/api/v1/security-settings", json=change, headers=admin)
    assert response.status_code == 200, response.text


def _setup(app, client, admin, webhook_url, **schedule) -> int:
    allow_loopback_webhooks(client, admin)
    server = client.post(
        "/api/v1/servers",
        headers=admin,
        json={"name": "EXCH-N", "databases": [{"name": "DB1", "layout": "rdm_virtual"}]},
    ).json()
    r = client.post(
        "/api/v1/policies",
        headers=admin,
        json={
            "name": "hourly",
            "method": "vmfs_snapshot",
            "consistency": "cold",
            **(schedule or {"rpo_minutes": 60}),
            "notify_webhook_url": webhook_url,
            "notify_webhook_secret": SECRET,
            "notify_emails": ["messaging-team@corp.example.com"],
            "targets": [{"server_id": server["id"], "database_id": server["databases"][0]["id"]}],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["has_webhook_secret"] is True and SECRET not in r.text
    return r.json()["id"]


def test_failures_and_rpo_breaches_are_sent_once(app, client, admin, settings, webhook, smtp):
    url, hooks = webhook
    port, mails = smtp
    policy_id = _setup(app, client, admin, url)
    runtime = app.state.runtime
    settings = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port})
    notifier = Notifier(settings, runtime.secrets)
    now = utcnow() + timedelta(hours=2)  # the policy is two hours old: its RPO is breached
    with runtime.db.session() as session:
        session.add(
            Job(
                kind=JobKind.BACKUP,
                policy_id=policy_id,
                state=JobState.FAILED,
                error="snapshot failed: disk busy",
                attempts=3,
                finished_at=utcnow(),
            )
        )
    with runtime.db.session() as session:
        assert notifier.sweep(session, now) == 2
    events = sorted(json.loads(body)["event"] for _, body in hooks)
    assert events == ["job.failed", "rpo.breach"]
    for headers, body in hooks:
        assert headers[SIGNATURE_HEADER] == sign(SECRET, body)
    assert {json.loads(b)["event"]: json.loads(b) for _, b in hooks}["rpo.breach"][
        "rpo_minutes"
    ] == 60
    assert len(mails) == 2 and mails[0].rcpt_tos == ["messaging-team@corp.example.com"]
    texts = [message_from_bytes(m.content, policy=default).get_content() for m in mails]
    assert any("snapshot failed: disk busy" in t for t in texts)

    with runtime.db.session() as session:
        assert notifier.sweep(session, now) == 0  # already told
    audit = client.get("/api/v1/audit-events?action=notification.sent", headers=admin).json()
    assert audit["total"] == 2


def test_a_fresh_restore_point_means_no_breach(app, client, admin, settings, webhook):
    url, hooks = webhook
    policy_id = _setup(app, client, admin, url)
    runtime = app.state.runtime
    with runtime.db.session() as session:
        target = session.query(PolicyTarget).filter_by(policy_id=policy_id).one()
        session.add(
            RestorePoint(
                policy_id=policy_id,
                server_id=target.server_id,
                database_id=target.database_id,
                captured_at=utcnow(),
                method=ProtectionMethod.VMFS_SNAPSHOT,
                consistency=Consistency.COLD,
            )
        )
    notifier = Notifier(settings, runtime.secrets)
    with runtime.db.session() as session:
        assert notifier.sweep(session, utcnow() + timedelta(minutes=30)) == 0
    assert hooks == []
    # The scheduler's tick sends what is owed once the RPO has passed.
    Scheduler(runtime.db, notifier=notifier).tick(utcnow() + timedelta(minutes=90))
    assert [json.loads(b)["event"] for _, b in hooks] == ["rpo.breach"]


def test_an_unreachable_webhook_is_retried_on_the_next_sweep(app, client, admin, settings):
    policy_id = _setup(app, client, admin, "http://127.0.0.1:9/nothing-listens")
    runtime = app.state.runtime
    notifier = Notifier(settings, runtime.secrets, timeout=2)
    with runtime.db.session() as session:
        policy = session.get(Policy, policy_id)
        policy.notify_emails = []
    with runtime.db.session() as session:
        assert notifier.sweep(session, utcnow() + timedelta(hours=2)) == 0
    audit = client.get("/api/v1/audit-events?action=notification.sent", headers=admin).json()
    assert audit["total"] == 0  # not recorded as sent, so the next sweep tries again


def test_a_cron_policy_breaches_when_its_schedule_gap_has_passed(
    app, client, admin, settings, webhook, smtp
):
    """No stated RPO: the objective is the longest gap of the schedule, the same figure the
    overview colours its table by (app.domain.rpo.objective_s)."""
    url, hooks = webhook
    port, mails = smtp
    policy_id = _setup(app, client, admin, url, schedule_cron="0 */6 * * *")
    runtime = app.state.runtime
    captured = utcnow()
    with runtime.db.session() as session:
        target = session.query(PolicyTarget).filter_by(policy_id=policy_id).one()
        session.add(
            RestorePoint(
                policy_id=policy_id,
                server_id=target.server_id,
                database_id=target.database_id,
                captured_at=captured,
                method=ProtectionMethod.VMFS_SNAPSHOT,
                consistency=Consistency.COLD,
            )
        )
    assert objective_s(None, "0 */6 * * *", captured, {}) == 6 * 3600
    settings = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port})
    notifier = Notifier(settings, runtime.secrets)
    with runtime.db.session() as session:  # five hours on: within the six-hour gap
        assert notifier.sweep(session, captured + timedelta(hours=5)) == 0
    assert hooks == [] and mails == []

    with runtime.db.session() as session:
        assert notifier.sweep(session, captured + timedelta(hours=7)) == 1
    ((headers, body),) = hooks
    notice = json.loads(body)
    assert headers[SIGNATURE_HEADER] == sign(SECRET, body)
    assert notice["event"] == "rpo.breach"
    assert notice["rpo_minutes"] == 360 and notice["schedule_cron"] == "0 */6 * * *"
    assert notice["age_minutes"] == 420
    (mail,) = mails
    text = message_from_bytes(mail.content, policy=default).get_content()
    assert "420 min old" in text and "runs at most 360 min apart" in text

    with runtime.db.session() as session:
        assert notifier.sweep(session, captured + timedelta(hours=8)) == 0  # already told


def test_logs_kept_after_a_backup_are_notified_once(app, client, admin, settings, webhook):
    url, hooks = webhook
    policy_id = _setup(app, client, admin, url)
    runtime = app.state.runtime
    notifier = Notifier(settings, runtime.secrets)
    with runtime.db.session() as session:
        server_id = (
            session.scalar(select(Policy).where(Policy.id == policy_id)).targets[0].server_id
        )
        for details in (
            {"log_warnings": ["the log disk is 91% full; Exchange dismounts its databases"]},
            {"truncation": {"via": "guest", "truncated": True}},  # fine: nothing to say
        ):
            session.add(
                RestorePoint(
                    policy_id=policy_id,
                    server_id=server_id,
                    method=ProtectionMethod.AGENT_STREAM,
                    consistency=Consistency.HOT_APPLICATION,
                    details=details,
                )
            )
    with runtime.db.session() as session:
        assert notifier.sweep(session, utcnow()) == 1
        assert notifier.sweep(session, utcnow()) == 0
    (body,) = [json.loads(b) for _, b in hooks]
    assert body["event"] == "exchange.logs" and "91% full" in body["warnings"][0]
