"""Incremental backup of one mailbox over IMAP.

Per folder Bulwark keeps UIDVALIDITY, the highest UID seen, UIDNEXT and (with CONDSTORE)
HIGHESTMODSEQ. A backup fetches only messages above the highest UID (``BODY.PEEK[]`` in a
read-only EXAMINE session: nothing is ever marked read), picks up flag changes and expunges
with CHANGEDSINCE / VANISHED where the server offers CONDSTORE / QRESYNC, and with a FLAGS
sweep of the folder where it does not (Exchange). A changed UIDVALIDITY means the server
renumbered the folder: everything Bulwark knew there is closed and the folder is read again
(content already in the repository is not stored twice).

Work is committed per batch, so an interrupted backup resumes where it stopped; the restore
point row (the mailbox as it was) appears only when the whole mailbox is done, and a retried
attempt of the same job that finds the mailbox done reports that point instead of adding one.

De-duplication trusts the repository, not the catalog: each backup asks the repository
which of the mailbox's current messages it still holds, and fetches those it lost from the
server again (``stored_again``), so a removed or damaged pack heals at the next backup.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.adapters.mail import FetchedMessage, MailAccount, MailSession, connect
from app.adapters.mail.client import iter_batches
from app.db.bulk import PlannerStatistics, in_values, insert_rows
from app.db.models import ArchiveMessage, Mailbox, MailboxRestorePoint, MailFolder, MailItem
from app.db.session import Database
from app.db.types import utcnow
from app.domain.protection import Verification
from app.mailboxes import archive
from app.mailboxes.parse import parse
from app.mailboxes.store import flush, put_message
from app.repository import Repository

Progress = Callable[[int, int], None]
# Batches handed to the commit thread and not yet committed (memory: this many batches plus
# the one being fetched). Two measured no faster than one on 2 cores: the GIL, not the
# order of the steps, bounds the pipeline there.
COMMITS_IN_FLIGHT = 1


@dataclass
class BackupOutcome:
    mailbox_id: int
    restore_point_id: int
    seq: int
    folders: int = 0
    new_messages: int = 0  # placements new in this restore point
    stored_messages: int = 0  # contents the repository did not have yet
    fetched_bytes: int = 0
    flag_changes: int = 0
    expunged: int = 0
    uidvalidity_resets: list[str] = field(default_factory=list)
    unchanged_folders: int = 0
    seconds: float = 0.0
    condstore: bool = False
    # Messages the repository no longer held (a pack lost, a file removed) fetched from
    # the server again, and those the server no longer has either (still missing).
    stored_again: int = 0
    still_missing: int = 0
    # What the catalog could not read in the new messages (kept raw; job warnings).
    index_warnings: list[str] = field(default_factory=list)
    # True when this job's earlier attempt already finished this mailbox: its point is
    # the one this attempt reports (a retry continues, never adds a point).
    resumed: bool = False


@dataclass
class _Open:
    item_id: int
    archive_id: int
    flags: list[str]
    internal_date: object


def _mailbox(session: Session, connection_id: int, name: str) -> Mailbox:
    mbx = session.scalar(
        select(Mailbox).where(Mailbox.connection_id == connection_id, Mailbox.name == name)
    )
    if mbx is None:
        mbx = Mailbox(connection_id=connection_id, name=name)
        session.add(mbx)
        session.flush()
    return mbx


def _open_items(session: Session, folder_id: int) -> dict[int, _Open]:
    rows = session.execute(
        select(
            MailItem.uid,
            MailItem.id,
            MailItem.archive_message_id,
            MailItem.flags,
            MailItem.internal_date,
        ).where(MailItem.folder_id == folder_id, MailItem.to_seq.is_(None))
    ).all()
    return {uid: _Open(iid, aid, list(flags or []), when) for uid, iid, aid, flags, when in rows}


def _close(session: Session, item_ids: list[int], seq: int, *, gone: bool) -> None:
    now = utcnow()
    for start in range(0, len(item_ids), 500):
        part = item_ids[start : start + 500]
        values = {"to_seq": seq, "gone_at": now} if gone else {"to_seq": seq}
        session.execute(update(MailItem).where(MailItem.id.in_(part)).values(**values))


class _Writer:
    """Stores fetched messages: contents to the repository (on a thread pool), placements
    and catalog rows to the database in bulk."""

    def __init__(self, db: Database, repo: Repository, repository_id: int, *, index: bool):
        self.db, self.repo, self.repository_id, self.index = db, repo, repository_id, index
        # One thread hashes, compresses and seals fetched messages. blake3, zstd and AES
        # release the GIL, but the Python around them (a third or more of a small message's
        # cost) does not: on 2 cores one thread stored the benchmark's mix faster than 2 or
        # 4 (about 6,800/s against 6,200/s and 5,600/s), the others only taking the GIL from
        # the IMAP thread.
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mail-store")
        # Database work of a batch (the SQLite / PostgreSQL driver releases the GIL while the
        # server works) runs beside the IMAP fetch of the next one.
        self.committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mail-commit")

        self.statistics = PlannerStatistics("archive_messages", "mail_items")
        # (future, what the calling thread does with its result, whether it is a batch)
        self.committing: collections.deque = collections.deque()
        # The commit thread's first failure: everything queued after it is skipped. A
        # folder's new state after a batch that failed would skip that batch's messages
        # in every later backup.
        self.failed: BaseException | None = None
        self.warnings: list[str] = []

    def close(self) -> None:
        self.committer.shutdown(wait=True)
        self.pool.shutdown(wait=True)

    def commit(self, fn, *args, after=None, batch: bool = True) -> None:
        """Run ``fn`` on the commit thread after everything submitted before it. A batch
        waits while COMMITS_IN_FLIGHT batches are not yet committed (memory); bookkeeping
        (a folder's new state) never waits, so the next folder is read meanwhile."""
        while batch and sum(b for _f, _a, b in self.committing) >= COMMITS_IN_FLIGHT:
            self._finish_one()
        self.committing.append(
            (self.committer.submit(self._unless_failed, fn, *args), after, batch)
        )

    def _unless_failed(self, fn, *args):
        if self.failed is not None:
            raise RuntimeError("not committed: an earlier batch failed") from self.failed
        try:
            return fn(*args)
        except BaseException as exc:
            self.failed = exc
            raise

    def drain(self) -> None:
        """Wait until everything submitted is committed (raises the first failure)."""
        while self.committing:
            self._finish_one()

    def _finish_one(self) -> None:
        future, after, _batch = self.committing.popleft()
        result = future.result()
        if after is not None:
            after(result)

    def _put_all(self, messages: list[FetchedMessage]) -> list[str]:
        return [put_message(self.repo, m.raw) for m in messages]

    def digests(self, messages: list[FetchedMessage]) -> Future[list[str]]:
        """The messages' digests in order, once stored: one task for the batch, not a future
        per message (each costs the fetching thread a few µs of the GIL)."""
        return self.pool.submit(self._put_all, messages)

    def archive_ids(self, session: Session, items: list[tuple[str, FetchedMessage]]):
        """Archive row ids for these digests, creating (and cataloging) missing ones."""
        wanted = {d: m for d, m in items}
        known = dict(
            session.execute(
                select(ArchiveMessage.digest, ArchiveMessage.id).where(
                    ArchiveMessage.repository_id == self.repository_id,
                    in_values(session, ArchiveMessage.digest, list(wanted)),
                )
            ).all()
        )
        missing = [d for d in wanted if d not in known]
        created = 0
        if missing:
            parsed = {d: parse(wanted[d].raw) for d in missing} if self.index else {}
            for d, p in parsed.items():
                self.warnings += [f"message {d[:12]}: {problem}" for problem in p.problems]
            now = utcnow()
            rows = []
            for d in missing:
                p = parsed.get(d)
                rows.append(
                    {
                        "repository_id": self.repository_id,
                        "digest": d,
                        "size": len(wanted[d].raw),
                        "message_id": p.message_id if p else None,
                        "subject": p.subject if p else "",
                        "sender": p.sender if p else "",
                        "recipients": p.recipients if p else "",
                        "sent_at": p.sent_at if p else None,
                        "attachments": p.attachments if p else [],
                        "first_seen_at": now,
                        "indexed_at": now if p else None,
                    }
                )
            try:
                with session.begin_nested():
                    # Core inserts of the tables: the ORM's bulk path costs more than SQL here.
                    table = ArchiveMessage.__table__
                    new = dict(insert_rows(session, table, rows, returning=("digest", "id")))
            except IntegrityError:
                # Another mailbox's backup stored the same message meanwhile: take its row.
                new = {}
                for row in rows:
                    try:
                        with session.begin_nested():
                            mid = session.scalar(
                                insert(ArchiveMessage).returning(ArchiveMessage.id), row
                            )
                        new[row["digest"]] = mid
                    except IntegrityError:
                        new[row["digest"]] = session.scalar(
                            select(ArchiveMessage.id).where(
                                ArchiveMessage.repository_id == self.repository_id,
                                ArchiveMessage.digest == row["digest"],
                            )
                        )
                        parsed.pop(row["digest"], None)
            known.update(new)
            created = len(new)
            if parsed:
                archive.index_rows(session, [(new[d], p) for d, p in parsed.items() if d in new])
        return known, created


def backup_mailbox(
    db: Database,
    repo: Repository,
    account: MailAccount,
    *,
    connection_id: int,
    mailbox: str,
    repository_id: int,
    policy_id: int | None = None,
    job_id: int | None = None,
    retention_days: int | None = None,
    index: bool = True,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> BackupOutcome:
    started = time.monotonic()
    # A writer record: garbage collection spares what this backup stores or uses again until
    # its database commits name them.
    with repo.writing():
        writer = _Writer(db, repo, repository_id, index=index)
        try:
            with connect(account, mailbox) as imap:
                # Only a mailbox the server let us into is one Bulwark knows.
                with db.session() as session:
                    mbx = _mailbox(session, connection_id, mailbox)
                    mailbox_id, seq = mbx.id, mbx.backup_seq + 1
                    done = _finished_in_job(session, mailbox_id, job_id)
                    if done is not None:
                        return done
                    lost = _lost_messages(session, repo, mailbox_id)
                outcome = BackupOutcome(mailbox_id, 0, seq, condstore=imap.condstore)
                server_folders = [f for f in imap.folders() if f.selectable]
                outcome.folders = len(server_folders)
                with db.session() as session:
                    known = {
                        f.name: f
                        for f in session.scalars(
                            select(MailFolder).where(MailFolder.mailbox_id == mailbox_id)
                        )
                    }
                    for info in server_folders:
                        if info.name not in known:
                            folder = MailFolder(
                                mailbox_id=mailbox_id, name=info.name, delimiter=info.delimiter
                            )
                            session.add(folder)
                            known[info.name] = folder
                    session.flush()
                    gone = [
                        f.id
                        for name, f in known.items()
                        if f.gone_at is None and name not in {i.name for i in server_folders}
                    ]
                    if gone:
                        open_ids = session.scalars(
                            select(MailItem.id).where(
                                MailItem.folder_id.in_(gone), MailItem.to_seq.is_(None)
                            )
                        ).all()
                        _close(session, list(open_ids), seq, gone=True)
                        outcome.expunged += len(open_ids)
                        session.execute(
                            update(MailFolder)
                            .where(MailFolder.id.in_(gone))
                            .values(gone_at=utcnow())
                        )
                    folder_ids = {name: f.id for name, f in known.items()}
                for info in server_folders:
                    if cancelled and cancelled():
                        raise InterruptedError("cancelled")
                    _backup_folder(
                        db,
                        imap,
                        writer,
                        folder_ids[info.name],
                        info.name,
                        seq,
                        outcome,
                        progress,
                        lost.pop(folder_ids[info.name], {}),
                    )
                writer.drain()
                outcome.index_warnings = writer.warnings
                outcome.still_missing += sum(len(v) for v in lost.values())
            flush(repo)
            with db.session() as session:
                if index and outcome.stored_messages:
                    archive.settle(session)
                count, size = session.execute(
                    select(func.count(MailItem.id), func.coalesce(func.sum(ArchiveMessage.size), 0))
                    .join(ArchiveMessage, ArchiveMessage.id == MailItem.archive_message_id)
                    .join(MailFolder, MailFolder.id == MailItem.folder_id)
                    .where(MailFolder.mailbox_id == mailbox_id, MailItem.to_seq.is_(None))
                ).one()
                now = utcnow()
                outcome.seconds = time.monotonic() - started
                point = MailboxRestorePoint(
                    mailbox_id=mailbox_id,
                    seq=seq,
                    repository_id=repository_id,
                    policy_id=policy_id,
                    job_id=job_id,
                    captured_at=now,
                    message_count=count,
                    size_bytes=int(size),
                    new_messages=outcome.new_messages,
                    retain_until=now + timedelta(days=retention_days) if retention_days else None,
                    details={
                        "folders": outcome.folders,
                        "stored_messages": outcome.stored_messages,
                        "fetched_bytes": outcome.fetched_bytes,
                        "flag_changes": outcome.flag_changes,
                        "expunged": outcome.expunged,
                        "uidvalidity_resets": outcome.uidvalidity_resets,
                        "condstore": outcome.condstore,
                        "seconds": round(outcome.seconds, 3),
                        "stored_again": outcome.stored_again,
                        "still_missing": outcome.still_missing,
                        "index_warnings": len(outcome.index_warnings),
                    },
                )
                if outcome.still_missing:
                    # Neither the repository nor the server has them: this point gives back
                    # all but those (a verify job says which).
                    point.verification = Verification.DAMAGED
                session.add(point)
                session.execute(
                    update(Mailbox)
                    .where(Mailbox.id == mailbox_id)
                    .values(
                        backup_seq=seq,
                        last_backup_at=now,
                        policy_id=policy_id,
                        compliance_retention_days=retention_days,
                    )
                )
                session.flush()
                outcome.restore_point_id = point.id
            return outcome
        finally:
            # Its threads end before the record does (on failure the record's end drops
            # chunks not yet flushed: no commit may still be about to name them).
            writer.close()


def _finished_in_job(session: Session, mailbox_id: int, job_id: int | None):
    """The outcome of this job's earlier attempt at the mailbox, if it finished it."""
    if job_id is None:
        return None
    point = session.scalar(
        select(MailboxRestorePoint).where(
            MailboxRestorePoint.mailbox_id == mailbox_id, MailboxRestorePoint.job_id == job_id
        )
    )
    if point is None:
        return None
    return BackupOutcome(mailbox_id, point.id, point.seq, resumed=True)


def _lost_messages(session: Session, repo: Repository, mailbox_id: int) -> dict[int, dict]:
    """Current messages of the mailbox whose content the repository no longer holds, by
    folder: {folder id: {uid: digest}}. One query and a lookup per message in the pack
    index (a file check only for the few stored loose)."""
    rows = session.execute(
        select(MailItem.folder_id, MailItem.uid, ArchiveMessage.digest)
        .join(ArchiveMessage, ArchiveMessage.id == MailItem.archive_message_id)
        .join(MailFolder, MailFolder.id == MailItem.folder_id)
        .where(MailFolder.mailbox_id == mailbox_id, MailItem.to_seq.is_(None))
    ).all()
    if not rows:
        return {}
    gone = repo.missing_chunks({d for _f, _u, d in rows})
    lost: dict[int, dict] = collections.defaultdict(dict)
    for folder_id, uid, digest in rows:
        if digest in gone:
            lost[folder_id][uid] = digest
    return dict(lost)


def _store_again(
    imap: MailSession, writer: _Writer, lost: dict[int, str], outcome: BackupOutcome
) -> set[int]:
    """Fetch lost messages from the (selected) folder and store them again; returns the
    UIDs the server no longer has."""
    got = set()
    for start in range(0, len(lost), 250):
        uids = sorted(lost)[start : start + 250]
        for m in imap.fetch(uids):
            if m.uid in lost and writer.repo.digest(m.raw) == lost[m.uid]:
                put_message(writer.repo, m.raw)
                got.add(m.uid)
    flush(writer.repo)
    outcome.stored_again += len(got)
    return set(lost) - got


def _backup_folder(
    db: Database,
    imap: MailSession,
    writer: _Writer,
    folder_id: int,
    name: str,
    seq: int,
    outcome: BackupOutcome,
    progress: Progress | None,
    lost: dict[int, str] | None = None,
) -> None:
    state = imap.examine(name)
    with db.session() as session:
        folder = session.get(MailFolder, folder_id)
        if lost and folder.uidvalidity == state.uidvalidity:
            outcome.still_missing += len(_store_again(imap, writer, lost, outcome))
        elif lost:
            outcome.still_missing += len(lost)  # renumbered: read again below if still there
        folder.gone_at = None
        if (
            folder.uidvalidity == state.uidvalidity
            and state.highestmodseq is not None
            and folder.highestmodseq == state.highestmodseq
            and folder.uidnext == state.uidnext
        ):
            outcome.unchanged_folders += 1
            return  # CONDSTORE says nothing changed: no flags, no expunges, no new mail
        if folder.uidvalidity is not None and folder.uidvalidity != state.uidvalidity:
            # The server renumbered the folder: what we knew there no longer names anything.
            open_ids = session.scalars(
                select(MailItem.id).where(
                    MailItem.folder_id == folder_id, MailItem.to_seq.is_(None)
                )
            ).all()
            _close(session, list(open_ids), seq, gone=True)
            outcome.expunged += len(open_ids)
            folder.highest_uid, folder.highestmodseq = 0, None
            outcome.uidvalidity_resets.append(name)
        folder.uidvalidity = state.uidvalidity
        highest, last_modseq = folder.highest_uid, folder.highestmodseq
        known = _open_items(session, folder_id)
        # Not holding SQLite's write lock through the IMAP round trips below: the commit
        # thread is committing the previous folder's batches meanwhile.
        session.commit()

        new_sizes = imap.sizes_after(highest) if state.exists else {}
        # Flag changes and expunges of what we already hold.
        vanished: set[int] = set()
        if known:
            if state.highestmodseq is not None and last_modseq is not None:
                changed, vanished = imap.changes_since(last_modseq, highest)
                if not imap.qresync and state.exists != len(known) + len(new_sizes):
                    vanished = set(known) - set(imap.uids())
            else:
                changed = imap.all_flags()  # the sweep servers without CONDSTORE need
                vanished = {uid for uid in known if uid not in changed}
            vanished &= set(known)
            if vanished:
                _close(session, [known[u].item_id for u in vanished], seq, gone=True)
                outcome.expunged += len(vanished)
            reflagged = [
                (uid, flags)
                for uid, flags in changed.items()
                if uid in known and uid not in vanished and flags != known[uid].flags
            ]
            if reflagged:
                _close(session, [known[u].item_id for u, _ in reflagged], seq, gone=False)
                session.execute(
                    insert(MailItem),
                    [
                        {
                            "folder_id": folder_id,
                            "archive_message_id": known[uid].archive_id,
                            "uidvalidity": state.uidvalidity,
                            "uid": uid,
                            "flags": flags,
                            "internal_date": known[uid].internal_date,
                            "from_seq": seq,
                        }
                        for uid, flags in reflagged
                    ],
                )
                outcome.flag_changes += len(reflagged)
        folder.message_count = state.exists
        session.commit()

    # New messages: fetch batch k+1 while batch k is hashed, compressed and written (store
    # threads) and then cataloged (the commit thread): this thread only talks IMAP. One
    # commit thread keeps the batches in order; COMMITS_IN_FLIGHT bounds the memory.
    total = len(new_sizes)
    done = 0

    def committed(count: int) -> None:
        nonlocal done
        done += count
        if progress:
            progress(done, total)

    for uids in iter_batches(new_sizes):
        fetched = imap.fetch(uids)
        if fetched:
            digests = writer.digests(fetched)
            writer.commit(
                _commit_batch,
                db,
                writer,
                folder_id,
                state.uidvalidity,
                seq,
                fetched,
                digests,
                outcome,
                after=committed,
            )
    # The folder's new state is written after its batches; the caller goes on to the next
    # folder meanwhile (waiting here for the last batch cost a batch's time per folder).
    highest = max(new_sizes) if new_sizes else None
    writer.commit(_folder_done, db, folder_id, state, highest, batch=False)


def _folder_done(db: Database, folder_id: int, state, highest: int | None) -> None:
    with db.session() as session:
        folder = session.get(MailFolder, folder_id)
        folder.highestmodseq = state.highestmodseq
        folder.uidnext = state.uidnext
        if highest is not None:
            folder.highest_uid = max(folder.highest_uid, highest)


def _commit_batch(
    db: Database,
    writer: _Writer,
    folder_id: int,
    uidvalidity: int,
    seq: int,
    fetched: list[FetchedMessage],
    digests: Future[list[str]],
    outcome: BackupOutcome,
) -> int:
    pairs = list(zip(digests.result(), fetched, strict=True))
    repo = writer.repo
    # Under the repository's gc lock (shared), as a manifest is saved: a garbage collection
    # cannot remove a chunk between the check below and the commit that names it. One that
    # ran since this batch reused a chunk may have taken it: store it again.
    with repo.gc_lock(exclusive=False):
        flush(repo)  # the database must never name a chunk that is not durable
        gone = repo.missing_chunks({d for d, _m in pairs})
        if gone:
            for d, m in pairs:
                if d in gone:
                    put_message(repo, m.raw)
            flush(repo)
        with db.session() as session:
            ids, created = writer.archive_ids(session, pairs)
            insert_rows(
                session,
                MailItem.__table__,
                [
                    {
                        "folder_id": folder_id,
                        "archive_message_id": ids[d],
                        "uidvalidity": uidvalidity,
                        "uid": m.uid,
                        "flags": m.flags,
                        "internal_date": m.internal_date.astimezone(UTC),
                        "from_seq": seq,
                    }
                    for d, m in pairs
                ],
            )
            session.execute(
                update(MailFolder)
                .where(MailFolder.id == folder_id)
                .values(highest_uid=max(m.uid for m in fetched))
            )
            writer.statistics.added(session, created)
    outcome.new_messages += len(pairs)
    outcome.stored_messages += created
    outcome.fetched_bytes += sum(len(m.raw) for m in fetched)
    return len(pairs)
