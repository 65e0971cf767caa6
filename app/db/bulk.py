"""Bulk inserts and lookups of hundreds of rows at once (a mail backup's batches).

On PostgreSQL the portable forms are slow for an unexpected reason: a multi-row INSERT or
an IN list of 250 values is one statement with thousands of parameters, which psycopg
parses in Python on every call (it caches only statements of at most 50 parameters). There
each column travels as one array instead (``INSERT … SELECT … FROM unnest(…)``, ``= ANY``):
a handful of parameters, a statement psycopg caches and the server prepares once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    String,
    Table,
    TypeDecorator,
    any_,
    bindparam,
    insert,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session


def _postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def in_values(session: Session, column, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``column = ANY(:array)``."""
    if _postgresql(session):
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(list(values))


def insert_rows(
    session: Session, table: Table, rows: list[dict[str, Any]], returning: Sequence[str] = ()
) -> list[tuple]:
    """Insert ``rows`` (dicts with the same keys); returns the ``returning`` columns' values
    (in no particular order)."""
    if not rows:
        return []
    if not _postgresql(session):
        stmt = insert(table)
        if returning:
            return list(session.execute(stmt.returning(*(table.c[c] for c in returning)), rows))
        session.execute(stmt, rows)
        return []
    dialect = session.get_bind().dialect
    quote = dialect.identifier_preparer.quote
    names, arrays, selects, params = [], [], [], {}
    for i, name in enumerate(rows[0]):
        column = table.c[name]
        values = [row[name] for row in rows]
        kind = column.type
        if isinstance(kind, TypeDecorator):
            values = [kind.process_bind_param(v, dialect) for v in values]
            kind = kind.impl_instance
        if isinstance(kind, JSON):
            # An array of JSON documents would be read as a nested array: send text.
            values = [None if v is None else json.dumps(v) for v in values]
            arrays.append(f"CAST(:c{i} AS text[])")
            selects.append(f"CAST(t.c{i} AS json)")
        elif isinstance(kind, String):
            # text, not varchar(n): an explicit cast to varchar(n) cuts silently, the
            # insert's own assignment cast refuses a value too long, as the portable path.
            arrays.append(f"CAST(:c{i} AS text[])")
            selects.append(f"t.c{i}")
        else:
            arrays.append(f"CAST(:c{i} AS {kind.compile(dialect=dialect)}[])")
            selects.append(f"t.c{i}")
        names.append(quote(name))
        params[f"c{i}"] = values
    aliases = ", ".join(f"c{i}" for i in range(len(names)))
    sql = (
        f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({', '.join(names)}) "
        f"SELECT {', '.join(selects)} FROM unnest({', '.join(arrays)}) AS t({aliases})"
    )
    if returning:
        sql += " RETURNING " + ", ".join(quote(c) for c in returning)
        return list(session.execute(text(sql), params))
    session.execute(text(sql), params)
    return []


class PlannerStatistics:
    """Keeps PostgreSQL's planner statistics of tables a bulk load grows in step with it.

    A table that was empty when the planner last looked (a first backup) is estimated at a
    handful of rows: a lookup of 250 digests then scans every row against every digest
    instead of probing the unique index, and each batch takes longer than the one before.
    Autovacuum analyzes only after a minute or more; this analyzes whenever the rows added
    since the last look reach what the planner knew (at least ``min_rows``): a few times
    per doubling, a few tens of milliseconds each. Nothing to do on SQLite.
    """

    def __init__(self, *tables: str, min_rows: int = 1000):
        self.tables = tables
        self.min_rows = min_rows
        self._known: float | None = None
        self._added = 0

    def added(self, session: Session, rows: int) -> None:
        if rows <= 0 or not _postgresql(session):
            return
        if self._known is None:
            known = session.scalar(
                text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                {"t": self.tables[0]},
            )
            self._known = max(0.0, float(known or 0))  # -1: never analyzed
        self._added += rows
        if self._added >= max(self.min_rows, self._known):
            session.execute(text("ANALYZE " + ", ".join(self.tables)))
            self._known += self._added
            self._added = 0
