"""The overview counts mailbox backups: a server protected by them has restore points, one
state per server comes from all of its protection (the worst real one), and the verified
RPO says "not verified yet", neutrally, until the first verify is due."""

from __future__ import annotations

from datetime import timedelta

from app.api.routes.repositories import verified_rpo_by_policy
from app.db.models import (
    Connection,
    ExchangeServer,
    Job,
    Mailbox,
    MailboxRestorePoint,
    Policy,
    PolicyTarget,
    RestorePoint,
)
from app.db.types import utcnow
from app.domain.connections import ConnectionKind
from app.domain.jobs import JobKind, JobState
from app.domain.protection import Consistency, ProtectionMethod
from app.web.queries import rpo_by_server


def estate(app, *, mail_age: timedelta, image_policy: bool = False) -> dict[str, int]:
    """A server whose mailboxes were backed up ``mail_age`` ago (first backup then too)."""
    now = utcnow()
    with app.state.runtime.db.session() as session:
        repo = Connection(name="lib", kind=ConnectionKind.REPOSITORY, options={"path": "/x"})
        imap = Connection(name="imap", kind=ConnectionKind.MAIL, options={"exchange_server": "ex1"})
        server = ExchangeServer(name="ex1")
        session.add_all([repo, imap, server])
        session.flush()
        mail = Policy(
            name="mailboxes",
            method=ProtectionMethod.MAILBOX,
            consistency=Consistency.HOT_APPLICATION,
            rpo_minutes=60,
            repository_id=repo.id,
            created_at=now - mail_age - timedelta(minutes=5),
        )
        mail.targets = [PolicyTarget(server_id=server.id)]
        session.add(mail)
        session.flush()
        job = Job(
            kind=JobKind.BACKUP,
            policy_id=mail.id,
            server_id=server.id,
            state=JobState.SUCCEEDED,
        )
        box = Mailbox(connection_id=imap.id, name="alice", policy_id=mail.id)
        session.add_all([job, box])
        session.flush()
        session.add(
            MailboxRestorePoint(
                mailbox_id=box.id,
                seq=1,
                repository_id=repo.id,
                policy_id=mail.id,
                job_id=job.id,
                captured_at=now - mail_age,
            )
        )
        ids = {"server": server.id, "mail": mail.id}
        if image_policy:
            # A second policy made moments ago: no restore point yet ("pending").
            image = Policy(
                name="image",
                method=ProtectionMethod.VM_IMAGE,
                consistency=Consistency.CRASH,
                rpo_minutes=60,
                repository_id=repo.id,
            )
            image.targets = [PolicyTarget(server_id=server.id)]
            session.add(image)
            session.flush()
            ids["image"] = image.id
        return ids


def test_a_server_protected_by_mailbox_backups_has_restore_points(app, client):
    ids = estate(app, mail_age=timedelta(minutes=10), image_policy=True)
    with app.state.runtime.db.session() as session:
        (row,), total = rpo_by_server(session)
        assert total == 1 and row.server_id == ids["server"]
        # The worst *real* state: the image policy waiting for its first point is not it.
        assert row.status == "ok" and row.newest is not None
        states = {p.name: p.status for p in row.policies}
        assert states == {"mailboxes": "ok", "image": "pending"}
        (mail,) = [
            p for p in verified_rpo_by_policy(session, utcnow()) if p.policy_id == ids["mail"]
        ]
        # Backed up ten minutes ago, the first verify due in a day: neutral, not breached.
        assert mail.not_verified_yet is True and mail.breached is False


def test_unverified_mailbox_backups_breach_once_the_first_verify_was_due(app, client):
    ids = estate(app, mail_age=timedelta(days=2))
    with app.state.runtime.db.session() as session:
        (row,), _total = rpo_by_server(session)
        assert row.status == "breached"  # two days old against an hour
        (mail,) = verified_rpo_by_policy(session, utcnow(), verify_minutes=1440)
        assert mail.policy_id == ids["mail"]
        assert mail.breached is True and mail.not_verified_yet is False


def test_the_overview_page_shows_it(app, client):
    from tests.web.conftest import sign_in

    estate(app, mail_age=timedelta(minutes=10))
    with app.state.runtime.db.session() as session:
        assert session.query(RestorePoint).count() == 0  # only mailbox backups
    assert sign_in(client, "admin", "admin-password-123").status_code == 303
    page = client.get("/").text
    assert "not verified yet" in page
    assert "No restore point yet" not in page
