"""How the job engine reaches the jobs table: transactions, guarded updates, event rows.

Every state change is one short transaction guarded by ownership (``worker_name`` and
``state = 'running'``), so a worker that lost its lease can never overwrite the work of the
worker that took the job over. Statements go straight to the session's connection (Core),
not through the ORM: nothing here needs ORM objects, and a job's overhead is mostly these
calls, so on PostgreSQL an update and its events are one statement where they can be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import DateTime, Text, bindparam, func, insert, select, text, true, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from app.db.models import Job, JobEvent
from app.db.session import Database
from app.domain.jobs import EventLevel, JobState

_PG_TIMES = ARRAY(DateTime(timezone=True))
_PG_TEXTS = ARRAY(Text())


@dataclass(frozen=True)
class PendingEvent:
    """An event a running job logged, not yet written (see JobContext.event)."""

    at: datetime
    level: EventLevel
    step: str
    message: str


class EngineCore:
    """What claiming and the state changes share (configured by ``JobEngine``)."""

    db: Database
    lease: timedelta
    clock: Callable[[], datetime]

    @property
    def is_postgresql(self) -> bool:
        return self.db.engine.dialect.name == "postgresql"

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A transaction that reads then writes without racing other writers.

        SQLite: ``BEGIN IMMEDIATE`` takes the write lock before the first read. PostgreSQL:
        a plain READ COMMITTED transaction; callers lock rows or take advisory locks.
        """
        with self.db.session() as session:
            if self.db.is_sqlite:
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield session

    @contextmanager
    def _single_statement_session(self) -> Iterator[Session]:
        """For writes that are one statement on PostgreSQL (an owned update with its events,
        a lease extension): run in autocommit, as a lone statement is atomic anyway, which
        saves the BEGIN and COMMIT round trips. Elsewhere a normal transaction."""
        if not self.is_postgresql:
            with self.db.session() as session:
                yield session
            return
        with self.db.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            with Session(bind=conn, expire_on_commit=False) as session:
                yield session

    def _try_lock(self, session: Session, namespace: int, key: int) -> bool:
        if not self.is_postgresql:
            return True  # the SQLite claim transaction already holds the write lock
        return bool(
            session.connection()
            .execute(
                text("SELECT pg_try_advisory_xact_lock(:ns, :key)"),
                {"ns": namespace, "key": key},
            )
            .scalar()
        )

    def _event(
        self,
        session: Session,
        job_id: int,
        message: str,
        level: EventLevel = EventLevel.INFO,
        step: str = "",
        at: datetime | None = None,
    ) -> None:
        session.connection().execute(
            insert(JobEvent).values(
                job_id=job_id, at=at or self.clock(), level=level, step=step, message=message
            )
        )

    def _events(self, session: Session, job_id: int, events: Iterable[PendingEvent]) -> None:
        """Write buffered events (one statement for all), in the order they happened."""
        rows = [
            {"job_id": job_id, "at": e.at, "level": e.level, "step": e.step, "message": e.message}
            for e in events
        ]
        if rows:
            session.connection().execute(insert(JobEvent), rows)

    def _write_with_events(
        self, session: Session, statement, job_id: int, events: list[PendingEvent]
    ) -> bool:
        """Run an UPDATE of the job and insert its events; on PostgreSQL as one statement
        (a data-modifying CTE), which saves a round trip on every claim, leftover and final
        state. The events are inserted only if the UPDATE changed the row; returns whether
        it did."""
        if not events or not self.is_postgresql:
            changed = session.connection().execute(statement).rowcount == 1
            if changed:
                self._events(session, job_id, events)
            return changed
        changed = statement.returning(Job.id).cte("changed")
        # Arrays unnested rather than a VALUES list, so the statement's shape does not
        # depend on how many events there are and SQLAlchemy compiles it once.
        rows = (
            func.unnest(
                bindparam("ev_at", [e.at for e in events], type_=_PG_TIMES),
                bindparam("ev_level", [e.level.value for e in events], type_=_PG_TEXTS),
                bindparam("ev_step", [e.step for e in events], type_=_PG_TEXTS),
                bindparam("ev_message", [e.message for e in events], type_=_PG_TEXTS),
            )
            .table_valued("at", "level", "step", "message", with_ordinality="n")
            .render_derived(name="new_events")
        )
        inserted = session.connection().execute(
            insert(JobEvent).from_select(
                ["job_id", "at", "level", "step", "message"],
                # Ordered, so event ids follow the order the events happened in.
                select(changed.c.id, rows.c.at, rows.c.level, rows.c.step, rows.c.message)
                .select_from(changed.join(rows, true()))
                .order_by(rows.c.n),
            ),
            execution_options={"preserve_rowcount": True},  # not kept for INSERTs otherwise
        )
        return inserted.rowcount > 0

    def _owned(self, job_id: int, worker_name: str):
        return (
            (Job.id == job_id) & (Job.worker_name == worker_name) & (Job.state == JobState.RUNNING)
        )

    def _update_owned_with_events(
        self,
        session: Session,
        job_id: int,
        owner: str,
        events: list[PendingEvent],
        owned_events: Iterable[PendingEvent] = (),
        /,
        **values,
    ) -> bool:
        """Update the job if ``owner`` still holds it, and write ``events`` either way (they
        are its log) plus ``owned_events`` only if it does; one statement when it does."""
        statement = (
            update(Job)
            .where(self._owned(job_id, owner))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if self._write_with_events(session, statement, job_id, [*events, *owned_events]):
            return True
        self._events(session, job_id, events)  # not owned: write the log alone
        return False

    def _update_owned(self, session: Session, job_id: int, owner: str, /, **values) -> bool:
        result = session.connection().execute(
            update(Job)
            .where(self._owned(job_id, owner))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1
