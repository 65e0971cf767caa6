"""Restores and exports of backed-up mail.

What to restore is a list of :class:`Item` — a message as it was in a restore point (or, from
the archive, at its last known place) with its folder, flags and internal date. Restores
APPEND into the original folder, a "Recovered Items" folder, or any folder of any mailbox the
service account can open, keeping flags and internal dates. Duplicate safety counts: a folder
that held a message N times (byte-identical copies are real: a message filed twice) gets N
copies back, less those the destination folder already holds (same Message-ID, size and
content hash), so running a restore twice adds nothing.
"""

from __future__ import annotations

import re
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO, Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.adapters.mail import MailAccount, MailSession, connect
from app.db.models import ArchiveMessage, Mailbox, MailboxRestorePoint, MailFolder, MailItem
from app.domain.protection import RestorePointStatus
from app.mailboxes.parse import message_id_of
from app.mailboxes.store import get_message
from app.repository import Repository

RECOVERED = "Recovered Items"
APPEND_BATCH = 100
Where = Literal["original", "recovered", "folder"]


@dataclass(frozen=True)
class Item:
    archive_id: int
    digest: str
    size: int
    folder: str
    delimiter: str
    uid: int
    flags: tuple[str, ...]
    internal_date: datetime
    mailbox: str


@dataclass(frozen=True)
class Destination:
    mailbox: str  # whose mailbox receives the mail
    where: Where = "original"
    folder: str | None = None  # for where="folder"

    def folder_for(self, item: Item) -> str:
        if self.where == "folder" and self.folder:
            return self.folder
        if self.where == "recovered":
            return f"{RECOVERED}{item.delimiter}{item.folder}"
        return item.folder


@dataclass
class RestoreOutcome:
    restored: int = 0
    skipped_existing: int = 0
    folders: list[str] = field(default_factory=list)


class NothingToRestore(ValueError):
    pass


# -- what a restore point holds ----------------------------------------------------------------


def restore_point(session: Session, point_id: int) -> MailboxRestorePoint:
    point = session.get(MailboxRestorePoint, point_id)
    if point is None:
        raise LookupError(f"mailbox restore point {point_id} does not exist")
    if point.status != RestorePointStatus.AVAILABLE:
        raise NothingToRestore(f"restore point {point_id} is {point.status.value}")
    return point


def _item_query(mailbox_id: int, seq: int):
    return (
        select(MailItem, MailFolder.name, MailFolder.delimiter, ArchiveMessage, Mailbox.name)
        .join(MailFolder, MailFolder.id == MailItem.folder_id)
        .join(Mailbox, Mailbox.id == MailFolder.mailbox_id)
        .join(ArchiveMessage, ArchiveMessage.id == MailItem.archive_message_id)
        .where(
            MailFolder.mailbox_id == mailbox_id,
            MailItem.from_seq <= seq,
            or_(MailItem.to_seq.is_(None), MailItem.to_seq > seq),
        )
    )


def _items(rows) -> list[Item]:
    return [
        Item(
            a.id,
            a.digest,
            a.size,
            folder,
            delimiter,
            i.uid,
            tuple(i.flags or ()),
            i.internal_date,
            mailbox,
        )
        for i, folder, delimiter, a, mailbox in rows
    ]


def folders_in(session: Session, point: MailboxRestorePoint) -> list[tuple[str, int]]:
    """Folders of the mailbox as of the restore point, with their message counts."""
    from sqlalchemy import func

    rows = session.execute(
        select(MailFolder.name, func.count(MailItem.id))
        .join(MailItem, MailItem.folder_id == MailFolder.id)
        .where(
            MailFolder.mailbox_id == point.mailbox_id,
            MailItem.from_seq <= point.seq,
            or_(MailItem.to_seq.is_(None), MailItem.to_seq > point.seq),
        )
        .group_by(MailFolder.name)
        .order_by(MailFolder.name)
    ).all()
    return [(n, c) for n, c in rows]


def items_in(
    session: Session,
    point: MailboxRestorePoint,
    *,
    folders: Iterable[str] | None = None,
    archive_ids: Iterable[int] | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[Item]:
    """Messages of the restore point: all, some folders, or some messages."""
    q = _item_query(point.mailbox_id, point.seq)
    if folders is not None:
        q = q.where(MailFolder.name.in_(list(folders)))
    if archive_ids is not None:
        q = q.where(MailItem.archive_message_id.in_(list(archive_ids)))
    q = q.order_by(MailFolder.name, MailItem.uid)
    if limit is not None:
        q = q.limit(limit).offset(offset)
    return _items(session.execute(q).all())


def archive_items(session: Session, archive_ids: Iterable[int]) -> list[Item]:
    """Messages from the archive at their last known place (deleted or not)."""
    ids = list(archive_ids)
    if not ids:
        return []
    rows = session.execute(
        select(MailItem, MailFolder.name, MailFolder.delimiter, ArchiveMessage, Mailbox.name)
        .join(MailFolder, MailFolder.id == MailItem.folder_id)
        .join(Mailbox, Mailbox.id == MailFolder.mailbox_id)
        .join(ArchiveMessage, ArchiveMessage.id == MailItem.archive_message_id)
        .where(MailItem.archive_message_id.in_(ids))
        .order_by(MailItem.archive_message_id, MailItem.from_seq.desc(), MailItem.id.desc())
    ).all()
    newest: dict[int, tuple] = {}
    for row in rows:
        newest.setdefault(row[0].archive_message_id, row)
    return _items(newest.values())


# -- restore --------------------------------------------------------------------------------------


def _existing(imap: MailSession, repo: Repository, wanted: list[tuple[Item, bytes]]) -> Counter:
    """How many copies of each wanted message (by digest) the selected folder holds."""
    present = imap.message_ids()
    if not present:
        return Counter()
    by_id: dict[str | None, list[int]] = defaultdict(list)
    for uid, (mid, _size) in present.items():
        by_id[mid].append(uid)
    sizes = {uid: size for uid, (_mid, size) in present.items()}
    candidates: set[int] = set()
    for _item, raw in wanted:
        mid = message_id_of(raw)
        for uid in by_id.get(mid, []):
            if sizes[uid] == len(raw):
                candidates.add(uid)
    if not candidates:
        return Counter()
    bodies = imap.bodies(sorted(candidates))
    return Counter(repo.digest(b) for b in bodies.values())


def restore(
    repo: Repository,
    account: MailAccount,
    items: list[Item],
    destination: Destination,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> RestoreOutcome:
    if not items:
        raise NothingToRestore("nothing selected to restore")
    outcome = RestoreOutcome()
    groups: dict[str, list[Item]] = defaultdict(list)
    with connect(account, destination.mailbox) as imap:
        delimiter = imap.delimiter()
        for item in items:
            target = destination.folder_for(item)
            if item.delimiter != delimiter:
                target = target.replace(item.delimiter, delimiter)
            groups[target].append(item)
        done = 0
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="mail-restore") as pool:
            for folder, group in groups.items():
                imap.ensure_folder(folder)
                imap.select(folder)
                outcome.folders.append(folder)
                # Read (and verify) contents on the pool while the server takes earlier ones.
                raws = list(pool.map(lambda i: get_message(repo, i.digest), group))
                wanted = list(zip(group, raws, strict=True))
                already = _existing(imap, repo, wanted)
                batch: list[tuple[bytes, list[str], datetime]] = []
                for item, raw in wanted:
                    if already[item.digest] > 0:  # one copy there answers for one wanted
                        already[item.digest] -= 1
                        outcome.skipped_existing += 1
                        continue
                    batch.append((raw, list(item.flags), item.internal_date))
                    if len(batch) >= APPEND_BATCH:
                        imap.append(folder, batch)
                        outcome.restored += len(batch)
                        batch = []
                if batch:
                    imap.append(folder, batch)
                    outcome.restored += len(batch)
                done += len(group)
                if progress:
                    progress(done, len(items))
    return outcome


# -- export ------------------------------------------------------------------------------------


def _safe_name(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in " ._-" else "_" for c in text).strip()
    # No leading dots: a folder named ".." must not become a path out of the export.
    return keep.lstrip(".") or "folder"


def export_eml_zip(repo: Repository, items: list[Item], out: BinaryIO) -> int:
    """EML files in a zip, one folder per mailbox folder; returns the message count."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for item in items:
            raw = get_message(repo, item.digest)
            parts = [_safe_name(p) for p in item.folder.split(item.delimiter)]
            name = "/".join(
                [_safe_name(item.mailbox), *parts, f"{item.uid}-{item.digest[:12]}.eml"]
            )
            info = zipfile.ZipInfo(name, date_time=item.internal_date.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, raw)
    return len(items)


# mbox flag letters: Status R (seen) and O (not new); X-Status as mutt and Thunderbird write it.
_X_STATUS = (("\\Answered", "A"), ("\\Deleted", "D"), ("\\Flagged", "F"), ("\\Draft", "T"))
_FROM_LINE = re.compile(rb"^(>*From )", re.M)


def mbox_entry(raw: bytes, flags: Iterable[str], internal_date: datetime) -> bytes:
    """One message as an mboxrd entry, its bytes kept exactly: a ``From `` line, then
    ``Status`` and ``X-Status`` lines (the stored flags), then the message with every line
    matching ``>*From `` given one more ``>``, then one newline. Reading it back (the
    ``From `` line and the two status lines dropped, one ``>`` taken from each quoted line,
    the last newline dropped) gives the message byte for byte."""
    flags = set(flags)
    eol = b"\r\n" if raw.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
    status = b"RO" if "\\Seen" in flags else b"O"
    x_status = "".join(letter for flag, letter in _X_STATUS if flag in flags).encode()
    when = internal_date.astimezone(UTC).strftime("%a %b %d %H:%M:%S %Y").encode()
    return b"".join(
        [
            b"From MAILER-DAEMON " + when + b"\n",
            b"Status: " + status + eol,
            b"X-Status: " + x_status + eol,
            _FROM_LINE.sub(rb">\1", raw),
            b"\n",
        ]
    )


def export_mbox(repo: Repository, items: list[Item], out: BinaryIO) -> int:
    """One mbox file (mboxrd): each stored message byte for byte, see :func:`mbox_entry`."""
    for item in items:
        out.write(mbox_entry(get_message(repo, item.digest), item.flags, item.internal_date))
    return len(items)
