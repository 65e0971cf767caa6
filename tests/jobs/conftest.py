"""Fixtures for the job engine: a database per test, fast timings, test handlers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.db.models import ExchangeServer, Job
from app.db.session import Database
from app.domain.jobs import JobKind
from app.jobs.engine import JobEngine
from app.jobs.handlers import HandlerRegistry
from app.jobs.worker import Worker

# Fast timings for tests: short leases, frequent polls, no real backoff waits.
FAST = {
    "lease_seconds": 2.0,
    "heartbeat_interval": 0.2,
    "cancel_poll_interval": 0.05,
    "poll_interval": 0.05,
    "retry_base_s": 30.0,
    "shutdown_grace_s": 5.0,
}


class FakeClock:
    """A clock tests move by hand (for backoff and schedules); starts at real now."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime.now(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, **delta: float) -> datetime:
        with self._lock:
            self.now += timedelta(**delta)
            return self.now


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def registry() -> HandlerRegistry:
    return HandlerRegistry()


@pytest.fixture
def servers(db: Database) -> list[int]:
    with db.session() as session:
        rows = [ExchangeServer(name=f"EXCH-{i}") for i in range(1, 4)]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def add_job(db: Database, kind: JobKind = JobKind.VERIFY, **fields: Any) -> int:
    with db.session() as session:
        job = Job(kind=kind, **fields)
        session.add(job)
        session.flush()
        return job.id


def add_jobs(db: Database, count: int, kind: JobKind = JobKind.VERIFY, **fields: Any) -> list[int]:
    with db.session() as session:
        jobs = [Job(kind=kind, **fields) for _ in range(count)]
        session.add_all(jobs)
        session.flush()
        return [j.id for j in jobs]


def load_job(db: Database, job_id: int) -> Job:
    with db.session() as session:
        job = session.scalar(select(Job).where(Job.id == job_id).options(selectinload(Job.events)))
        session.expunge_all()
        return job


def messages(db: Database, job_id: int) -> list[str]:
    return [e.message for e in load_job(db, job_id).events]


def make_worker(
    db: Database, name: str, registry: HandlerRegistry, capabilities=(), **options: Any
) -> Worker:
    settings = {**FAST, **options}
    return Worker(db, name, capabilities, registry=registry, **settings)


def make_engine(db: Database, **options: Any) -> JobEngine:
    return JobEngine(db, lease_seconds=options.pop("lease_seconds", 2.0), **options)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02):
    """Poll until ``predicate()`` is truthy; generous timeouts, never a timing assertion."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``target`` in a thread; the dict gets its result or exception."""
    out: dict[str, Any] = {}

    def _run():
        try:
            out["result"] = target()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out["error"] = exc

    thread = threading.Thread(target=_run, daemon=True)
    thread.start()
    return thread, out
