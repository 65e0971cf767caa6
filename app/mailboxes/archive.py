"""The archive catalog's full-text index and search: SQLite FTS5 on the embedded default,
PostgreSQL full-text search (a generated tsvector with a GIN index) in production.

Migration 0005 makes ``archive_fts`` per dialect; this module is the only code that reads or
writes it. Search terms become a conjunction of plain tokens on both databases, so the same
query finds the same messages whichever database runs.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Select, exists, func, or_, select, text, update
from sqlalchemy.orm import Session

from app.db.models import ArchiveMessage, Mailbox, MailFolder, MailItem
from app.db.models.mailboxes import FTS_TABLE
from app.db.types import utcnow
from app.mailboxes.parse import Parsed

# Snippet markers that cannot occur in mail text; replaced by <mark> after HTML escaping.
_OPEN, _CLOSE = "\x02", "\x03"
_TOKEN = re.compile(r"\w+", re.UNICODE)
MAX_TOKENS = 16
SNIPPET_SOURCE_CHARS = 6_000


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def index_rows(session: Session, rows: Sequence[tuple[int, Parsed]]) -> None:
    """Put parsed messages (archive id, parsed) into the full-text index, in bulk."""
    if not rows:
        return
    values = [
        {
            "id": mid,
            "subject": p.subject,
            "people": p.people,
            "body": p.body,
            "attachments": " ".join(p.attachments),
        }
        for mid, p in rows
    ]
    if _dialect(session) == "postgresql":
        statement = text(
            f"INSERT INTO {FTS_TABLE} (message_id, subject, people, body, attachments) "
            "VALUES (:id, :subject, :people, :body, :attachments) "
            "ON CONFLICT (message_id) DO NOTHING"
        )
    else:
        statement = text(
            f"INSERT OR REPLACE INTO {FTS_TABLE} (rowid, subject, people, body, attachments) "
            "VALUES (:id, :subject, :people, :body, :attachments)"
        )
    session.execute(statement, values)


def settle(session: Session) -> None:
    """After many inserts: on PostgreSQL merge the GIN index's pending list, which the
    planner otherwise weighs so heavily that it scans the whole table instead."""
    if _dialect(session) == "postgresql":
        session.execute(text("SELECT gin_clean_pending_list('archive_fts_document'::regclass)"))


def unindex(session: Session, ids: Iterable[int]) -> None:
    ids = list(ids)
    if not ids:
        return
    column = "message_id" if _dialect(session) == "postgresql" else "rowid"
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ", ".join(str(int(i)) for i in part)
        session.execute(text(f"DELETE FROM {FTS_TABLE} WHERE {column} IN ({marks})"))


def catalog(session: Session, rows: Sequence[tuple[int, Parsed]]) -> None:
    """Write parsed headers to the catalog rows and index their text (one bulk statement
    each)."""
    if not rows:
        return
    now = utcnow()
    session.execute(
        update(ArchiveMessage),
        [
            {
                "id": mid,
                "message_id": p.message_id,
                "subject": p.subject,
                "sender": p.sender,
                "recipients": p.recipients,
                "sent_at": p.sent_at,
                "attachments": p.attachments,
                "indexed_at": now,
            }
            for mid, p in rows
        ],
    )
    index_rows(session, rows)


# -- search -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchQuery:
    """A records request: terms in headers and bodies, people, a date range, a mailbox."""

    terms: str = ""
    people: str = ""
    mailbox: str = ""
    sent_from: datetime | None = None
    sent_to: datetime | None = None
    include_deleted: bool = True

    def tokens(self) -> list[str]:
        return _TOKEN.findall(self.terms.lower())[:MAX_TOKENS]

    def as_dict(self) -> dict:
        return {
            "terms": self.terms,
            "people": self.people,
            "mailbox": self.mailbox,
            "sent_from": self.sent_from.isoformat() if self.sent_from else None,
            "sent_to": self.sent_to.isoformat() if self.sent_to else None,
        }

    @classmethod
    def from_dict(cls, doc: dict) -> SearchQuery:
        def when(v):
            return datetime.fromisoformat(v) if v else None

        return cls(
            terms=doc.get("terms") or "",
            people=doc.get("people") or "",
            mailbox=doc.get("mailbox") or "",
            sent_from=when(doc.get("sent_from")),
            sent_to=when(doc.get("sent_to")),
        )

    @property
    def empty(self) -> bool:
        return not (
            self.tokens() or self.people.strip() or self.mailbox or self.sent_from or self.sent_to
        )


@dataclass
class Hit:
    id: int
    subject: str
    sender: str
    recipients: str
    sent_at: datetime | None
    size: int
    attachments: list[str]
    snippet_html: str
    places: list[dict] = field(default_factory=list)  # mailbox, folder, uid, on_server

    @property
    def on_server(self) -> bool:
        return any(p["on_server"] for p in self.places)


@dataclass
class SearchResult:
    total: int
    hits: list[Hit]


def _fts_ids(session: Session, tokens: list[str]):
    """A selectable of archive ids whose text has every token."""
    if _dialect(session) == "postgresql":
        query = " & ".join(f"{t}:*" if i == len(tokens) - 1 else t for i, t in enumerate(tokens))
        return (
            text(
                f"SELECT message_id AS id FROM {FTS_TABLE} "
                "WHERE document @@ to_tsquery('bulwark_mail', :q)"
            )
            .bindparams(q=query)
            .columns(id=ArchiveMessage.id.type)
        )
    match = " ".join(f'"{t}"' for t in tokens[:-1]) + f' "{tokens[-1]}"*'
    return (
        text(f"SELECT rowid AS id FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q")
        .bindparams(q=match.strip())
        .columns(id=ArchiveMessage.id.type)
    )


def _filtered(session: Session, q: SearchQuery) -> Select:
    stmt = select(ArchiveMessage.id)
    tokens = q.tokens()
    if tokens:
        ids = _fts_ids(session, tokens).subquery()
        stmt = stmt.where(ArchiveMessage.id.in_(select(ids.c.id)))
    if q.people.strip():
        for word in q.people.lower().split()[:4]:
            # Escaped: a '%' or '_' typed in the search is that character, not a wildcard.
            stmt = stmt.where(
                or_(
                    func.lower(ArchiveMessage.sender).contains(word, autoescape=True),
                    func.lower(ArchiveMessage.recipients).contains(word, autoescape=True),
                )
            )
    if q.sent_from:
        stmt = stmt.where(ArchiveMessage.sent_at >= q.sent_from)
    if q.sent_to:
        stmt = stmt.where(ArchiveMessage.sent_at <= q.sent_to)
    if q.mailbox:
        stmt = stmt.where(
            exists(
                select(MailItem.id)
                .join(MailFolder, MailFolder.id == MailItem.folder_id)
                .join(Mailbox, Mailbox.id == MailFolder.mailbox_id)
                .where(MailItem.archive_message_id == ArchiveMessage.id, Mailbox.name == q.mailbox)
            )
        )
    return stmt


def matching_ids(session: Session, q: SearchQuery) -> list[int]:
    """Every archive id the query finds (for holds and exports)."""
    return list(session.scalars(_filtered(session, q)))


def search(session: Session, q: SearchQuery, *, limit: int = 50, offset: int = 0) -> SearchResult:
    # One query gives the page and the total (a window count over the matches).
    found = session.execute(
        _filtered(session, q)
        .with_only_columns(ArchiveMessage, func.count().over())
        .order_by(ArchiveMessage.sent_at.desc().nulls_last(), ArchiveMessage.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    rows = [r for r, _n in found]
    if found:
        total = found[0][1]
    else:  # past the last page: count alone
        total = session.scalar(select(func.count()).select_from(_filtered(session, q).subquery()))
    ids = [r.id for r in rows]
    snippets = _snippets(session, ids, q.tokens())
    places = places_of(session, ids)
    hits = [
        Hit(
            r.id,
            r.subject,
            r.sender,
            r.recipients,
            r.sent_at,
            r.size,
            list(r.attachments or []),
            snippets.get(r.id, ""),
            places.get(r.id, []),
        )
        for r in rows
    ]
    return SearchResult(total, hits)


def places_of(session: Session, ids: list[int]) -> dict[int, list[dict]]:
    """Where each message is or was: mailbox, folder, UID, and whether it is still there."""
    out: dict[int, list[dict]] = {i: [] for i in ids}
    if not ids:
        return out
    rows = session.execute(
        select(
            MailItem.archive_message_id,
            Mailbox.id,
            Mailbox.name,
            MailFolder.name,
            MailItem.uid,
            MailItem.to_seq,
            MailItem.gone_at,
        )
        .join(MailFolder, MailFolder.id == MailItem.folder_id)
        .join(Mailbox, Mailbox.id == MailFolder.mailbox_id)
        .where(MailItem.archive_message_id.in_(ids))
        .order_by(MailItem.id)
    ).all()
    seen: set[tuple] = set()
    for mid, mailbox_id, mailbox, folder, uid, to_seq, gone_at in rows:
        key = (mid, mailbox_id, folder, uid)
        on_server = to_seq is None
        if key in seen:
            # a newer version of the same placement (flag change): keep the latest state
            for p in out[mid]:
                if (p["mailbox_id"], p["folder"], p["uid"]) == key[1:]:
                    p["on_server"], p["gone_at"] = on_server, gone_at
            continue
        seen.add(key)
        out[mid].append(
            {
                "mailbox_id": mailbox_id,
                "mailbox": mailbox,
                "folder": folder,
                "uid": uid,
                "on_server": on_server,
                "gone_at": gone_at,
            }
        )
    return out


def _snippets(session: Session, ids: list[int], tokens: list[str]) -> dict[int, str]:
    if not ids:
        return {}
    marks = ", ".join(str(int(i)) for i in ids)
    if _dialect(session) == "postgresql":
        if tokens:
            sql = text(
                # ts_headline parses the whole text it gets: give it the start of long mail.
                "SELECT message_id, ts_headline('bulwark_mail', left(body, :cut), "
                "to_tsquery('bulwark_mail', :q), "
                "'StartSel=\x02, StopSel=\x03, MaxWords=30, MinWords=12, MaxFragments=2') "
                f"FROM {FTS_TABLE} WHERE message_id IN ({marks})"
            ).bindparams(q=" & ".join(f"{t}:*" for t in tokens), cut=SNIPPET_SOURCE_CHARS)
        else:
            sql = text(
                f"SELECT message_id, left(body, 200) FROM {FTS_TABLE} WHERE message_id IN ({marks})"
            )
        rows = session.execute(sql).all()
    elif tokens:
        match = " ".join(f'"{t}"*' for t in tokens)
        rows = session.execute(
            text(
                f"SELECT rowid, snippet({FTS_TABLE}, 2, '\x02', '\x03', '…', 24) "
                f"FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q AND rowid IN ({marks})"
            ).bindparams(q=match)
        ).all()
        found = {r[0] for r in rows}
        missing = [i for i in ids if i not in found]
        if missing:
            rows += _plain_snippets(session, missing)
    else:
        rows = _plain_snippets(session, ids)
    return {int(mid): _safe(snippet or "") for mid, snippet in rows}


def _plain_snippets(session: Session, ids: list[int]):
    marks = ", ".join(str(int(i)) for i in ids)
    return session.execute(
        text(f"SELECT rowid, substr(body, 1, 200) FROM {FTS_TABLE} WHERE rowid IN ({marks})")
    ).all()


def _safe(snippet: str) -> str:
    """HTML-escaped snippet with only our own <mark> tags in it."""
    return html.escape(snippet).replace(_OPEN, "<mark>").replace(_CLOSE, "</mark>")


def unindexed_ids(
    session: Session, repository_id: int | None = None, limit: int = 1000, after: int = 0
):
    """(id, digest) of messages not cataloged yet, in id order after ``after``."""
    stmt = select(ArchiveMessage.id, ArchiveMessage.digest).where(
        ArchiveMessage.indexed_at.is_(None), ArchiveMessage.id > after
    )
    if repository_id is not None:
        stmt = stmt.where(ArchiveMessage.repository_id == repository_id)
    return session.execute(stmt.order_by(ArchiveMessage.id).limit(limit)).all()


__all__ = [
    "Hit",
    "SearchQuery",
    "SearchResult",
    "catalog",
    "index_rows",
    "matching_ids",
    "places_of",
    "search",
    "unindex",
]
