"""The archive: full-text search by terms, people, dates and mailbox; compliance retention
keeps mail deleted on the server findable and restorable; legal holds survive expiry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.db.models import ArchiveMessage, AuditEvent, LegalHold, MailboxRestorePoint, Policy
from app.domain.protection import Consistency, ProtectionMethod, RestorePointStatus
from app.mailboxes import restore as mrestore
from app.mailboxes.archive import SearchQuery, search
from app.mailboxes.retention import expire
from app.repository import ChunkDamaged
from app.repository.gc import collect_garbage
from tests.mailboxes.helpers import folder_state, sha
from tests.mailboxes.mailgen import message

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _ids(result) -> set[str]:
    return {h.subject for h in result.hits}


def test_search_terms_people_dates_mailbox_with_snippets(mail_env):
    env = mail_env
    env.append(
        message(
            1,
            subject="Merger plan for Zürich",
            body="The merger with Contoso closes in May",
            sender="carol@example.com",
            when=T0,
        ),
    )
    env.append(
        message(
            2,
            subject="Lunch",
            body="Café at noon? Ångström joins",
            to="dave@example.org",
            when=T0 + timedelta(days=40),
        ),
        folder="Privat/Ärger",
    )
    env.append(
        message(
            3,
            subject="Budget",
            body="quarterly budget review",
            attachment=b"x" * 10,
            attachment_name="Übersicht.xlsx",
        )
    )
    env.append(message(4, subject="Other user mail", body="merger rumours"), user=env.other)
    env.backup()
    env.backup(env.other)

    with env.db.session() as s:
        # terms in bodies, case- and accent-insensitively on SQLite and PostgreSQL alike
        r = search(s, SearchQuery(terms="merger"))
        assert r.total == 2 and _ids(r) == {"Merger plan for Zürich", "Other user mail"}
        hit = next(h for h in r.hits if h.subject == "Merger plan for Zürich")
        assert "<mark>" in hit.snippet_html and "merger" in hit.snippet_html.lower()
        assert hit.places[0]["mailbox"] == env.user and hit.on_server
        # a mailbox narrows it
        assert _ids(search(s, SearchQuery(terms="merger", mailbox=env.other))) == {
            "Other user mail"
        }
        # people: sender or recipients
        assert _ids(search(s, SearchQuery(people="carol"))) == {"Merger plan for Zürich"}
        assert _ids(search(s, SearchQuery(people="dave@example.org"))) == {"Lunch"}
        # dates (the Date header)
        later = search(s, SearchQuery(sent_from=T0 + timedelta(days=1), mailbox=env.user))
        assert "Lunch" in _ids(later) and "Merger plan for Zürich" not in _ids(later)
        # attachment names and non-ASCII words are searchable
        assert _ids(search(s, SearchQuery(terms="übersicht"))) == {"Budget"}
        assert _ids(search(s, SearchQuery(terms="angstrom"))) == {"Lunch"}
        # prefix of the last word, as someone types
        assert _ids(search(s, SearchQuery(terms="quarter"))) == {"Budget"}
        # snippets never carry markup from the mail itself
        env_html = search(s, SearchQuery(terms="café")).hits[0].snippet_html
        assert "<script" not in env_html


def test_reading_mail_never_sets_seen(mail_env):
    env = mail_env
    for n in range(5):
        env.append(message(n), when=T0)
    env.append(message(9), flags=("\\Flagged",), when=T0)
    env.backup()
    env.append(message(10), when=T0)
    env.backup()
    with env.imap() as c:
        state = folder_state(c, "INBOX")
    assert all("\\Seen" not in flags for _h, flags, _d in state)
    assert sum(1 for _h, flags, _d in state if flags == ("\\Flagged",)) == 1


def _policy(env, keep_last: int, days: int | None) -> int:
    with env.db.session() as s:
        p = Policy(
            name=f"mail-{keep_last}-{days}",
            method=ProtectionMethod.MAILBOX,
            schedule_cron="0 * * * *",
            consistency=Consistency.CRASH,
            keep_last=keep_last,
            compliance_retention_days=days,
            repository_id=env.repository_id,
        )
        s.add(p)
        s.flush()
        return p.id


def _delete_on_server(env, raw: bytes) -> None:
    with env.imap() as c:
        c.select_folder("INBOX")
        data = c.fetch("1:*", ["BODY.PEEK[]"])
        c.delete_messages([u for u, d in data.items() if d[b"BODY[]"] == raw])
        c.expunge()


def test_deleted_mail_stays_findable_and_restorable_during_compliance_retention(mail_env):
    env = mail_env
    policy = _policy(env, keep_last=1, days=30)
    kept = message(1, subject="Board minutes", body="confidential board minutes", when=T0)
    newsletter = message(3, subject="Old newsletter", body="weekly newsletter", when=T0)
    env.append(kept, flags=("\\Seen",), when=T0)
    env.append(newsletter, when=T0)
    env.append(message(2, subject="Stays"), when=T0)
    env.backup(policy_id=policy, retention_days=30)
    _delete_on_server(env, kept)
    _delete_on_server(env, newsletter)
    env.backup(policy_id=policy, retention_days=30)
    env.backup(policy_id=policy, retention_days=30)

    with env.db.session() as s:
        # the restore points themselves are young: retention keeps them too
        assert expire(s).expired_points == []
    with env.db.session() as s:
        # later than the points' retention, but within the messages' (counted from when the
        # backup saw them deleted): the old points go, the deleted mail stays in the archive
        for p in s.scalars(select(MailboxRestorePoint)):
            p.retain_until = None
        outcome = expire(s, now=datetime.now(UTC) + timedelta(days=29))
        assert len(outcome.expired_points) == 2 and outcome.removed_messages == 0
        hit = search(s, SearchQuery(terms="board minutes")).hits
        assert len(hit) == 1 and not hit[0].on_server
        assert search(s, SearchQuery(terms="newsletter")).total == 1
        newsletter_digest = s.scalar(
            select(ArchiveMessage.digest).where(ArchiveMessage.subject == "Old newsletter")
        )
        items = mrestore.archive_items(s, [hit[0].id])
    out = mrestore.restore(env.repo, env.account, items, mrestore.Destination(env.user))
    assert out.restored == 1
    with env.imap() as c:
        assert (sha(kept), ("\\Seen",), T0.isoformat()) in folder_state(c, "INBOX")
    env.backup(policy_id=policy, retention_days=30)  # the restored mail is live mail again

    with env.db.session() as s:
        # after the retention, deleted mail leaves the archive; live mail stays
        outcome = expire(s, now=datetime.now(UTC) + timedelta(days=31))
        assert outcome.removed_messages == 1
        assert search(s, SearchQuery(terms="newsletter")).total == 0
        assert search(s, SearchQuery(terms="board minutes")).total == 1
        actions = s.scalars(select(AuditEvent.action)).all()
        assert actions.count("mailbox_restore_point.expire") >= 2
        assert "archive.expire" in actions
        collect_garbage(env.repo, s, grace_s=-3600)
    try:
        env.repo.get_chunk(newsletter_digest)
        raise AssertionError("the expired message's chunk is still in the repository")
    except ChunkDamaged:
        pass


def test_held_message_survives_expiry_and_the_rest_goes(mail_env):
    env = mail_env
    policy = _policy(env, keep_last=1, days=None)
    held = message(1, subject="Project Falcon pricing", body="falcon pricing sheet")
    loose = message(2, subject="Cafeteria menu", body="soup of the day")
    env.append(held, when=T0)
    env.append(loose, when=T0)
    env.backup(policy_id=policy)
    _delete_on_server(env, held)
    _delete_on_server(env, loose)
    env.backup(policy_id=policy)
    with env.db.session() as s:
        s.add(
            LegalHold(
                name="falcon",
                reason="litigation 2026-17",
                scope="search",
                search_query=json.dumps(SearchQuery(terms="falcon").as_dict()),
                created_by="auditor",
            )
        )
    with env.db.session() as s:
        digests = {
            subject: s.scalar(
                select(ArchiveMessage.digest).where(ArchiveMessage.subject == subject)
            )
            for subject in ("Project Falcon pricing", "Cafeteria menu")
        }
        outcome = expire(s)
        assert outcome.removed_messages == 1 and outcome.held_messages == 1
        statuses = s.scalars(select(MailboxRestorePoint.status).order_by(MailboxRestorePoint.seq))
        assert list(statuses) == [RestorePointStatus.EXPIRED, RestorePointStatus.AVAILABLE]
        assert search(s, SearchQuery(terms="falcon")).total == 1
        assert search(s, SearchQuery(terms="cafeteria")).total == 0
        report = collect_garbage(env.repo, s, grace_s=-3600)
        assert report is not None
        items = mrestore.archive_items(s, [search(s, SearchQuery(terms="falcon")).hits[0].id])
    assert env.repo.get_chunk(digests["Project Falcon pricing"]) == held
    try:
        env.repo.get_chunk(digests["Cafeteria menu"])
        raise AssertionError("the expired message's chunk is still in the repository")
    except ChunkDamaged:
        pass
    # and the held message can still be restored
    out = mrestore.restore(env.repo, env.account, items, mrestore.Destination(env.user))
    assert out.restored == 1

    # Released, the hold stops protecting it.
    with env.db.session() as s:
        hold = s.scalar(select(LegalHold).where(LegalHold.name == "falcon"))
        hold.released_at = datetime.now(UTC)
    _delete_on_server(env, held)
    env.backup(policy_id=policy)
    with env.db.session() as s:
        assert expire(s).removed_messages == 1


def test_mailbox_hold_blocks_restore_point_expiry(mail_env):
    env = mail_env
    policy = _policy(env, keep_last=1, days=None)
    env.append(message(1), when=T0)
    env.backup(policy_id=policy)
    env.append(message(2), when=T0)
    env.backup(policy_id=policy)
    with env.db.session() as s:
        s.add(
            LegalHold(
                name="mbx", reason="r", scope="mailbox", mailbox=env.user, created_by="auditor"
            )
        )
    with env.db.session() as s:
        outcome = expire(s)
        assert outcome.expired_points == []
        assert any("legal hold" in why for why in outcome.kept_points.values())
