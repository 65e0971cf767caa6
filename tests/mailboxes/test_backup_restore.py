"""Backup, change, back up again, and restore from each restore point: hashes, flags and
internal dates come back exactly; against Dovecot with CONDSTORE/QRESYNC and without
(the Exchange-like sweep)."""

from __future__ import annotations

import io
import mailbox as mbox_lib
import os
import tempfile
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.db.models import ArchiveMessage, MailboxRestorePoint
from app.mailboxes import restore as mrestore
from tests.mailboxes.helpers import folder_state, mailbox_state, sha
from tests.mailboxes.mailgen import message

FOLDER = "Projekte/Grüße"  # non-ASCII: modified UTF-7 on the wire
T0 = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def _seed(env) -> dict[str, bytes]:
    msgs = {
        "plain": message(1),
        "attached": message(2, attachment=os.urandom(50_000), attachment_name="Bericht Ü.pdf"),
        "large": message(3, size=3 * 1024 * 1024),
        "seen": message(4),
        "flagged": message(5),
        "doomed": message(6, subject="Quarterly numbers — to be deleted"),
    }
    env.append(msgs["plain"], when=T0)
    env.append(msgs["attached"], when=T0 + timedelta(hours=1))
    env.append(msgs["large"], when=T0 + timedelta(hours=2))
    env.append(msgs["seen"], flags=("\\Seen",), when=T0 + timedelta(hours=3))
    env.append(msgs["flagged"], flags=("\\Flagged", "$Important"), when=T0 + timedelta(hours=4))
    env.append(msgs["doomed"], flags=("\\Seen",), when=T0 + timedelta(hours=5))
    for n in range(3):
        raw = message(100 + n)
        msgs[f"folder{n}"] = raw
        env.append(raw, folder=FOLDER, when=T0 + timedelta(days=n))
    return msgs


def _uid_of(client, folder: str, raw: bytes) -> int:
    client.select_folder(folder)
    data = client.fetch("1:*", ["BODY.PEEK[]"])
    return next(uid for uid, d in data.items() if d[b"BODY[]"] == raw)


def test_backup_change_backup_and_restore_each_point(mail_env):
    env = mail_env
    msgs = _seed(env)
    with env.imap() as c:
        before = mailbox_state(c)
    first = env.backup()
    assert first.seq == 1 and first.new_messages == 9 and first.stored_messages == 9
    with env.imap() as c:
        assert mailbox_state(c) == before  # a backup changes nothing, \Seen least of all

    # Change: new mail, a delete, flag changes, and a renumbered (UIDVALIDITY reset) folder.
    new = message(7, subject="Arrived after the first backup")
    env.append(new, when=T0 + timedelta(days=9))
    with env.imap() as c:
        c.select_folder("INBOX")
        c.delete_messages([_uid_of(c, "INBOX", msgs["doomed"])])
        c.expunge()
        c.add_flags([_uid_of(c, "INBOX", msgs["plain"])], ["\\Answered"])
        c.remove_flags([_uid_of(c, "INBOX", msgs["seen"])], ["\\Seen"])
        old_validity = c.select_folder(FOLDER)[b"UIDVALIDITY"]
        c.select_folder("INBOX")
        c.delete_folder(FOLDER)
        c.create_folder(FOLDER)
        for n in (0, 1):  # folder1 stays, folder2 is gone with the reset
            c.append(FOLDER, msgs[f"folder{n}"], (), T0 + timedelta(days=n))
        assert c.select_folder(FOLDER)[b"UIDVALIDITY"] != old_validity
        after = mailbox_state(c)

    second = env.backup()
    assert second.seq == 2
    assert second.new_messages == 1 + 2  # the new mail, and the re-numbered folder read again
    assert second.stored_messages == 1  # the folder's contents were already in the repository
    assert second.flag_changes == 2
    assert second.expunged == 1 + 3  # the deleted mail, and the folder's old numbering
    assert second.uidvalidity_resets == [FOLDER]

    third = env.backup()  # nothing changed since: nothing fetched, nothing stored
    assert (third.new_messages, third.flag_changes, third.expunged) == (0, 0, 0)

    with env.db.session() as s:
        points = s.scalars(select(MailboxRestorePoint).order_by(MailboxRestorePoint.seq)).all()
        assert [p.seq for p in points] == [1, 2, 3]
        assert [p.message_count for p in points] == [9, 8, 8]
        # contents stored once however many restore points hold them
        assert s.scalar(select(func.count(ArchiveMessage.id))) == 10

    # Whole mailbox from each restore point into an empty mailbox: exactly as it was.
    for point_id, expected, count in ((points[0].id, before, 9), (points[1].id, after, 8)):
        target = f"{env.user}r{point_id}"
        env.server.add_user(target)
        with env.db.session() as s:
            items = mrestore.items_in(s, mrestore.restore_point(s, point_id))
        outcome = mrestore.restore(env.repo, env.account, items, mrestore.Destination(target))
        assert outcome.restored == count
        with env.imap(target) as c:
            assert mailbox_state(c) == expected
        # Restoring again adds nothing (Message-ID and hash match what is there).
        again = mrestore.restore(env.repo, env.account, items, mrestore.Destination(target))
        assert (again.restored, again.skipped_existing) == (0, count)
        with env.imap(target) as c:
            assert mailbox_state(c) == expected

    # One message (deleted on the server since) back into its original place.
    with env.db.session() as s:
        point = mrestore.restore_point(s, points[0].id)
        doomed = next(
            i
            for i in mrestore.items_in(s, point)
            if i.size == len(msgs["doomed"])
            and i.folder == "INBOX"
            and "\\Seen" in i.flags
            and i.uid == 6
        )
    out = mrestore.restore(env.repo, env.account, [doomed], mrestore.Destination(env.user))
    assert out.restored == 1
    with env.imap() as c:
        inbox = folder_state(c, "INBOX")
    assert (sha(msgs["doomed"]), ("\\Seen",), (T0 + timedelta(hours=5)).isoformat()) in inbox

    # A folder from the first restore point into Recovered Items.
    with env.db.session() as s:
        point = mrestore.restore_point(s, points[0].id)
        folder_items = mrestore.items_in(s, point, folders=[FOLDER])
    assert len(folder_items) == 3
    mrestore.restore(
        env.repo, env.account, folder_items, mrestore.Destination(env.user, "recovered")
    )
    with env.imap() as c:
        recovered = folder_state(c, f"Recovered Items/{FOLDER}")
    assert recovered == before[FOLDER]


def test_export_eml_zip_and_mbox(mail_env):
    env = mail_env
    raws = [message(n, attachment=b"x" * 1000 if n == 2 else None) for n in range(1, 4)]
    for raw in raws:
        env.append(raw, flags=("\\Seen",), when=T0)
    env.backup()
    with env.db.session() as s:
        point = s.scalar(select(MailboxRestorePoint))
        items = mrestore.items_in(s, point)
    buf = io.BytesIO()
    assert mrestore.export_eml_zip(env.repo, items, buf) == 3
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        names = zf.namelist()
        assert all(n.startswith(f"{env.user}/INBOX/") and n.endswith(".eml") for n in names)
        assert sorted(sha(zf.read(n)) for n in names) == sorted(sha(r) for r in raws)
    out = io.BytesIO()
    assert mrestore.export_mbox(env.repo, items, out) == 3
    with tempfile.NamedTemporaryFile(suffix=".mbox") as f:
        f.write(out.getvalue())
        f.flush()
        box = mbox_lib.mbox(f.name)
        subjects = sorted(m["Subject"] for m in box)
        assert len(subjects) == 3 and all("R" in m.get_flags() for m in box)


def test_restore_into_another_users_mailbox(mail_env):
    env = mail_env
    raw = message(42, subject="For the other user")
    env.append(raw, folder="Reports", flags=("\\Flagged",), when=T0)
    env.backup()
    with env.db.session() as s:
        point = s.scalar(select(MailboxRestorePoint))
        items = mrestore.items_in(s, point, folders=["Reports"])
    mrestore.restore(env.repo, env.account, items, mrestore.Destination(env.other, "recovered"))
    with env.imap(env.other) as c:
        assert folder_state(c, "Recovered Items/Reports") == [
            (sha(raw), ("\\Flagged",), T0.isoformat())
        ]
    with env.imap() as c:  # the source mailbox is untouched
        assert not c.folder_exists("Recovered Items/Reports")


@pytest.mark.parametrize("mode", ["tls", "starttls"])
def test_backup_over_tls_and_starttls(mail_env, mode):
    from tests.mailboxes.conftest import account_for

    env = mail_env
    env.append(message(1), when=T0)
    port = env.server.tls_port if mode == "tls" else env.server.port
    env.account = account_for(env.server, tls=mode, port=port)
    assert env.backup().new_messages == 1


def test_an_interrupted_backup_resumes_where_it_stopped(mail_env):
    from app.db.models import MailItem

    env = mail_env
    for n in range(4):
        env.append(message(n), folder="Alpha", when=T0)
        env.append(message(10 + n), folder="Beta", when=T0)

    # The backup is asked before each folder, in the server's order: stop before the second
    # of the two folders with mail (the first one's batches are committed as it stops).
    with env.imap() as c:
        order = [name for _flags, _delim, name in c.list_folders()]
    stop_at = max(order.index("Alpha"), order.index("Beta")) + 1
    asked = []

    def cancel_after_first_folder() -> bool:
        asked.append(1)
        return len(asked) == stop_at

    with pytest.raises(InterruptedError):
        env.backup(cancelled=cancel_after_first_folder)
    with env.db.session() as s:
        assert s.scalar(select(func.count(MailboxRestorePoint.id))) == 0  # not a restore point
        done_first = s.scalar(select(func.count(MailItem.id)))
    assert done_first == 4  # the first folder was committed

    resumed = env.backup()
    assert resumed.seq == 1 and resumed.new_messages == 4  # only what was left
    with env.db.session() as s:
        assert s.scalar(select(func.count(MailItem.id))) == 8  # nothing twice
        (point,) = s.scalars(select(MailboxRestorePoint)).all()
        assert point.message_count == 8


def test_a_batch_that_fails_to_commit_is_fetched_again_next_time(mail_env, monkeypatch):
    """The folder's new state (highest UID, MODSEQ) is queued behind its batches; when a
    batch fails, it must not be written, or the next backup would skip those messages."""
    from app.db.models import MailFolder, MailItem
    from app.mailboxes import backup as mail_backup

    env = mail_env
    for n in range(3):
        env.append(message(n), folder="Alpha", when=T0)
    real = mail_backup._commit_batch

    def failing(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(mail_backup, "_commit_batch", failing)
    with pytest.raises(OSError, match="No space left"):
        env.backup()
    with env.db.session() as s:
        assert s.scalar(select(func.count(MailItem.id))) == 0
        alpha = s.scalar(select(MailFolder).where(MailFolder.name == "Alpha"))
        assert not alpha.highest_uid and alpha.highestmodseq is None
    monkeypatch.setattr(mail_backup, "_commit_batch", real)
    again = env.backup()
    assert again.new_messages == 3
