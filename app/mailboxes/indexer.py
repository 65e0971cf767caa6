"""Catalog and full-text index messages stored without it (backups run with ``index=False``,
or a re-index after the index was rebuilt): read each from the repository, parse, write the
catalog columns and the index in bulk."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import text, update

from app.db.models import ArchiveMessage
from app.db.models.mailboxes import FTS_TABLE
from app.db.session import Database
from app.mailboxes import archive
from app.mailboxes.parse import parse
from app.mailboxes.store import get_message
from app.repository import Repository


def index_pending(
    db: Database,
    repo: Repository,
    repository_id: int,
    *,
    batch: int = 500,
    warnings: list[str] | None = None,
) -> int:
    """Catalog and index every message of the repository not indexed yet; returns how many.
    What could not be read of a message (kept raw, never a failure) goes to ``warnings``.

    Parsing stays in this process: handing messages to helper processes (pickling both ways)
    measured slower than parsing them here on this two-core machine."""
    done, after = 0, 0
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="mail-index") as readers:
        while True:
            with db.session() as session:
                rows = archive.unindexed_ids(session, repository_id, limit=batch, after=after)
                if not rows:
                    if done:
                        archive.settle(session)
                    return done
                after = rows[-1][0]
                raws = readers.map(lambda r: get_message(repo, r[1]), rows)
                parsed = [(r[0], parse(raw)) for r, raw in zip(rows, raws, strict=True)]
                if warnings is not None:
                    warnings += [
                        f"message {r[1][:12]}: {problem}"
                        for r, (_mid, p) in zip(rows, parsed, strict=True)
                        for problem in p.problems
                    ]
                archive.unindex(session, [mid for mid, _ in parsed])
                archive.catalog(session, parsed)
            done += len(rows)


def forget_index(db: Database, repository_id: int) -> None:
    """Take a repository's messages out of the full-text index (before a rebuild)."""
    with db.session() as session:
        column = "message_id" if session.get_bind().dialect.name == "postgresql" else "rowid"
        session.execute(
            text(
                f"DELETE FROM {FTS_TABLE} WHERE {column} IN "
                "(SELECT id FROM archive_messages WHERE repository_id = :r)"
            ),
            {"r": repository_id},
        )
        session.execute(
            update(ArchiveMessage)
            .where(ArchiveMessage.repository_id == repository_id)
            .values(indexed_at=None)
        )
