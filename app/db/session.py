"""Engine and session factory for the configured database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, pre_ping: bool = True) -> Engine:
    """``pre_ping`` tests each pooled connection before use (one round trip per checkout).
    Workers turn it off: their loop survives a dropped connection (SQLAlchemy invalidates
    the pool on the error and the next attempt reconnects), and a job's many short
    transactions should not each pay for a ping."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            # Foreign keys are off by default in SQLite; WAL lets readers run beside the writer.
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=pre_ping, pool_size=10, max_overflow=10)


class Database:
    """The engine and its session factory, created once per process."""

    def __init__(self, url: str, *, pre_ping: bool = True):
        self.url = url
        self.engine = make_engine(url, pre_ping=pre_ping)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessionmaker() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def dispose(self) -> None:
        self.engine.dispose()
