"""Issue 13's defects one at a time, each against Dovecot and both databases: what real
mail holds never fails a backup, a retried attempt adds no restore point, a restore keeps
every copy of a message, the mbox export carries the stored bytes, raw UTF-8 headers are
found by their text, and a message the repository lost is stored again."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from app.db.models import ArchiveMessage, Job, MailboxRestorePoint
from app.domain.jobs import JobKind
from app.mailboxes import archive
from app.mailboxes import restore as mrestore
from app.mailboxes.parse import parse
from app.mailboxes.store import get_message
from tests.mailboxes.corpus import corpus
from tests.mailboxes.helpers import folder_state, sha
from tests.mailboxes.test_real_mail import mbox_status, read_mbox

T0 = datetime(2025, 10, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def imap_server(dovecot):
    """One server is enough here (the adapter tests cover the Exchange-like one)."""
    return dovecot


def samples(*names: str):
    by_name = {s.name: s for s in corpus()}
    return [by_name[n] for n in names]


def search(env, **kw) -> set[int]:
    with env.db.session() as s:
        return {h.id for h in archive.search(s, archive.SearchQuery(**kw), limit=500).hits}


def test_what_a_message_holds_never_fails_its_backup(mail_env):
    """Defect 1: a To: of thousands of grouped addresses (RecursionError in getaddresses)
    and raw 8-bit bytes in a filename, a Date and a Message-ID (Header objects) once failed
    the whole backup. Now: stored, restorable, indexed as far as possible, warned about."""
    env = mail_env
    huge, raw8 = samples("huge-to", "raw-8bit-params")
    for s in (huge, raw8):
        env.append(s.raw, flags=s.flags, when=T0)
    outcome = env.backup(index=True)
    assert outcome.new_messages == 2
    assert any("RecursionError" in w for w in outcome.index_warnings)
    with env.db.session() as s:
        rows = {a.subject: a for a in s.scalars(select(ArchiveMessage))}
    assert rows["Quarterly allhands"].recipients.count("@lists.example") == 4000
    assert rows["Résumé attached"].attachments == ["résumé.pdf"]
    assert rows["Résumé attached"].message_id == "<résumé@example.fr>"
    assert rows["Résumé attached"].sent_at == datetime(2024, 3, 9, 10, 0, tzinfo=UTC)
    assert search(env, terms="allhands") and search(env, terms="curriculum")
    with env.imap() as c:
        c.select_folder("INBOX", readonly=True)
        served = {d[b"BODY[]"] for d in c.fetch("1:*", ["BODY.PEEK[]"]).values()}
    assert {get_message(env.repo, a.digest) for a in rows.values()} == served


def test_a_retried_attempt_continues_and_adds_no_restore_point(mail_env):
    """Defect 2: each failed attempt of a job left a restore point of its own."""
    env = mail_env
    env.append(samples("msg_01")[0].raw, when=T0)
    with env.db.session() as s:
        job = Job(kind=JobKind.BACKUP, created_by="test")
        s.add(job)
        s.flush()
        job_id = job.id
    first = env.backup(job_id=job_id)
    again = env.backup(job_id=job_id)  # the attempt after a failure later in the job
    assert again.resumed and again.restore_point_id == first.restore_point_id
    with env.db.session() as s:
        assert s.scalar(select(func.count(MailboxRestorePoint.id))) == 1
    assert env.backup().seq == first.seq + 1  # another job makes a point of its own


def test_a_restore_keeps_every_copy_of_a_message(mail_env):
    """Defect 3: byte-identical messages in a folder came back once."""
    env = mail_env
    raw = samples("msg_01")[0].raw
    other = samples("msg_02")[0].raw
    for _ in range(3):
        env.append(raw, "Filed", ("\\Seen",), T0)
    env.append(other, "Filed", (), T0)
    outcome = env.backup()
    with env.db.session() as s:
        point = s.get(MailboxRestorePoint, outcome.restore_point_id)
        items = mrestore.items_in(s, point)
    dest = mrestore.Destination(env.other, "original")
    first = mrestore.restore(env.repo, env.account, items, dest)
    assert first.restored == 4 and first.skipped_existing == 0
    second = mrestore.restore(env.repo, env.account, items, dest)
    assert second.restored == 0 and second.skipped_existing == 4
    with env.imap() as c:
        source = folder_state(c, "Filed")
    with env.imap(env.other) as c:
        got = folder_state(c, "Filed")
    assert got == source and len({h for h, _f, _w in got}) == 2


def test_the_mbox_export_carries_the_stored_bytes(mail_env):
    """Defect 4: the mbox export re-serialised messages (folded headers, preambles,
    epilogues, closing boundaries came out altered) and mis-set Status / X-Status."""
    env = mail_env
    chosen = samples("msg_25", "msg_26", "msg_43", "big-attachment", "msg_07-crlf", "raw-utf8")
    flags = [
        (),
        ("\\Seen",),
        ("\\Seen", "\\Answered"),
        ("\\Flagged", "\\Deleted"),
        ("\\Draft",),
        ("\\Seen", "$x"),
    ]
    for s, fl in zip(chosen, flags, strict=True):
        env.append(s.raw, "INBOX", fl, T0)
    outcome = env.backup()
    with env.db.session() as s:
        items = mrestore.items_in(s, s.get(MailboxRestorePoint, outcome.restore_point_id))
    out = io.BytesIO()
    assert mrestore.export_mbox(env.repo, items, out) == len(chosen)
    with env.imap() as c:
        c.select_folder("INBOX", readonly=True)
        served = c.fetch("1:*", ["BODY.PEEK[]", "FLAGS"])
    want = sorted(
        (d[b"BODY[]"], *mbox_status(tuple(f.decode() for f in d[b"FLAGS"])))
        for d in served.values()
    )
    assert sorted(read_mbox(out.getvalue())) == want


def test_raw_utf8_headers_and_quoted_local_parts_are_found(mail_env):
    """Defect 5: RFC 6532 headers were not decoded for the catalog and the index."""
    env = mail_env
    for s in samples("raw-utf8", "raw-big5", "quoted-local-part"):
        env.append(s.raw, when=T0)
    env.backup(index=True)
    with env.db.session() as s:
        subjects = {a.subject: a for a in s.scalars(select(ArchiveMessage))}
    assert set(subjects) == {"Säying Hello", "會議通知 agenda", "Crash in parser"}
    assert subjects["Säying Hello"].sender == "Jürgen Döe <jdöe@mächine.example>"
    utf8 = subjects["Säying Hello"].id
    assert search(env, terms="säying") == {utf8}
    assert search(env, terms="zürich") == {utf8}
    assert search(env, people="jdöe@mächine.example") == {utf8}
    assert search(env, terms="會議通知") == {subjects["會議通知 agenda"].id}
    crash = subjects["Crash in parser"].id
    assert crash in search(env, people='"Big Bug bb"@bug.com')
    assert crash in search(env, people="Big Bug bb@bug.com")
    assert parse(samples("raw-utf8")[0].raw).problems == []


def test_a_message_the_repository_lost_is_stored_again(mail_env):
    """Defect 8: de-duplication trusted the catalog, so a message whose stored object was
    gone was never stored again while the server still had it."""
    env = mail_env
    chosen = samples("msg_01", "msg_02", "big-attachment")
    for s in chosen:
        env.append(s.raw, when=T0)
    env.backup()
    root = env.repo.store.root
    for sub in ("packs", "index", "chunks"):
        for path in (root / sub).rglob("*"):
            if path.is_file():
                path.unlink()  # every stored message gone
    env.repo.packs.forget("")
    outcome = env.backup()
    assert outcome.stored_again == 3 and outcome.still_missing == 0
    with env.db.session() as s:
        digests = list(s.scalars(select(ArchiveMessage.digest)))
    with env.imap() as c:
        c.select_folder("INBOX", readonly=True)
        served = sorted(sha(d[b"BODY[]"]) for d in c.fetch("1:*", ["BODY.PEEK[]"]).values())
    assert sorted(sha(get_message(env.repo, d)) for d in digests) == served
    assert env.repo.missing_chunks(digests) == set()
    assert env.backup().stored_again == 0  # whole again: nothing more to fetch
