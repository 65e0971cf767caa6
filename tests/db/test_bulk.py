"""Bulk inserts and lookups give the same rows on SQLite and on PostgreSQL (where they go
through arrays: unnest and ANY)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text

from app.db.bulk import PlannerStatistics, in_values, insert_rows
from app.db.models import ArchiveMessage, Connection
from app.db.session import Database
from app.domain.connections import ConnectionKind


@pytest.fixture
def db(database_url):
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def repository_id(db) -> int:
    with db.session() as s:
        conn = Connection(name="repo", kind=ConnectionKind.REPOSITORY, options={"path": "/x"})
        s.add(conn)
        s.flush()
        return conn.id


def rows(repository_id: int, n: int, start: int = 0) -> list[dict]:
    zone = timezone(timedelta(hours=5, minutes=30))
    return [
        {
            "repository_id": repository_id,
            "digest": f"{i:064x}",
            "size": 1000 + i,
            "message_id": None if i % 2 else f"<{i}@example.com>",
            "subject": f"Grüße {i}",
            "sender": "alice@example.com",
            "recipients": "bob@example.com",
            "sent_at": None if i % 3 == 0 else datetime(2024, 1, 1, 12, tzinfo=zone),
            "attachments": [] if i % 2 else [{"name": "ä.pdf", "size": i}],
            "first_seen_at": datetime(2024, 2, 1, tzinfo=UTC),
            "indexed_at": None,
        }
        for i in range(start, start + n)
    ]


def test_inserted_rows_read_back_and_ids_are_returned(db, repository_id):
    batch = rows(repository_id, 300)
    with db.session() as s:
        returned = dict(insert_rows(s, ArchiveMessage.__table__, batch, returning=("digest", "id")))
    assert sorted(returned) == sorted(r["digest"] for r in batch)
    with db.session() as s:
        stored = {m.digest: m for m in s.scalars(select(ArchiveMessage))}
    for r in batch:
        m = stored[r["digest"]]
        assert m.id == returned[r["digest"]]
        assert (m.size, m.message_id, m.subject) == (r["size"], r["message_id"], r["subject"])
        assert m.attachments == r["attachments"]
        assert m.sent_at == r["sent_at"] and m.first_seen_at == r["first_seen_at"]
        assert m.indexed_at is None


def test_lookup_by_many_values_finds_exactly_those(db, repository_id):
    with db.session() as s:
        insert_rows(s, ArchiveMessage.__table__, rows(repository_id, 50))
    wanted = [f"{i:064x}" for i in (3, 7, 49, 50, 999)]
    with db.session() as s:
        found = s.scalars(
            select(ArchiveMessage.digest).where(
                ArchiveMessage.repository_id == repository_id,
                in_values(s, ArchiveMessage.digest, wanted),
            )
        ).all()
    assert sorted(found) == wanted[:3]


def test_nothing_to_insert_is_no_statement(db):
    with db.session() as s:
        assert insert_rows(s, ArchiveMessage.__table__, [], returning=("id",)) == []


def test_postgresql_statistics_follow_a_growing_table(db, repository_id):
    """The planner learns the table grew (so lookups probe the unique index); on SQLite
    there is nothing to do."""
    stats = PlannerStatistics("archive_messages", min_rows=100)
    with db.session() as s:
        insert_rows(s, ArchiveMessage.__table__, rows(repository_id, 150))
        stats.added(s, 150)
    if db.engine.dialect.name != "postgresql":
        assert stats._known is None  # never asked
        return
    with db.session() as s:
        known = s.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'archive_messages'"))
    assert known == 150
    with db.session() as s:
        insert_rows(s, ArchiveMessage.__table__, rows(repository_id, 100, start=150))
        stats.added(s, 100)  # 100 added since, against 150 known: not yet
        assert (
            s.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'archive_messages'"))
            == 150
        )


def test_a_value_too_long_is_never_cut(db, repository_id):
    """PostgreSQL refuses it (as the portable insert does); SQLite keeps lengths to no one
    and stores it whole."""
    from sqlalchemy.exc import DBAPIError

    batch = rows(repository_id, 2)
    batch[1]["digest"] = "f" * 65  # the column says 64
    if db.engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="too long"), db.session() as s:
            insert_rows(s, ArchiveMessage.__table__, batch)
        expected = []
    else:
        with db.session() as s:
            insert_rows(s, ArchiveMessage.__table__, batch)
        expected = sorted(r["digest"] for r in batch)
    with db.session() as s:
        assert sorted(s.scalars(select(ArchiveMessage.digest)).all()) == expected
