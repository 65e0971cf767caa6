"""Back up several mailboxes at once, one process each (both cores: IMAP response parsing and
message parsing hold Python's GIL, so threads would not help).

Processes are spawned, never forked: the caller may be a worker with threads (heartbeats),
and a forked child would inherit their locks. Each process opens its own database engine and
repository handle from plain arguments.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.adapters.mail import MailAccount

# A process costs about a third of a second to start; below this many mailboxes the backup
# runs in the caller's process.
PARALLEL_FROM = 2


@dataclass(frozen=True)
class RepositorySpec:
    """How a child process opens the repository (the key never touches the disk)."""

    path: str
    key: bytes | None
    id: int | None


def _run_one(database_url: str, spec: RepositorySpec, account: MailAccount, kwargs: dict):
    from app.db.session import Database
    from app.mailboxes.backup import backup_mailbox
    from app.repository import open_repository_at

    db = Database(database_url)
    try:
        repo = open_repository_at(Path(spec.path), key=spec.key, id=spec.id)
        return backup_mailbox(db, repo, account, **kwargs)
    finally:
        db.dispose()


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def backup_many(
    database_url: str,
    spec: RepositorySpec,
    work: Iterable[tuple[MailAccount, dict[str, Any]]],
    *,
    workers: int | None = None,
    on_done: Callable[[dict[str, Any], Any], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> list[tuple[dict[str, Any], Any]]:
    """Run ``backup_mailbox(**kwargs)`` for each item; returns (kwargs, outcome or exception)
    in completion order. ``on_done`` hears of each as it finishes."""
    items = list(work)
    workers = min(workers or default_workers(), len(items))
    results: list[tuple[dict[str, Any], Any]] = []
    if workers < PARALLEL_FROM or len(items) < PARALLEL_FROM:
        from app.db.session import Database
        from app.mailboxes.backup import backup_mailbox
        from app.repository import open_repository_at

        db = Database(database_url)
        repo = open_repository_at(Path(spec.path), key=spec.key, id=spec.id)
        try:
            for account, kwargs in items:
                if cancelled and cancelled():
                    break
                try:
                    outcome: Any = backup_mailbox(db, repo, account, **kwargs)
                except Exception as exc:  # noqa: BLE001 - reported per mailbox
                    outcome = exc
                results.append((kwargs, outcome))
                if on_done:
                    on_done(kwargs, outcome)
        finally:
            db.dispose()
        return results
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: dict[Future, dict[str, Any]] = {
            pool.submit(_run_one, database_url, spec, account, kwargs): kwargs
            for account, kwargs in items
        }
        while pending:
            done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            if cancelled and cancelled():
                for f in pending:
                    f.cancel()
            for f in done:
                kwargs = pending.pop(f)
                try:
                    outcome = f.result()
                except Exception as exc:  # noqa: BLE001 - reported per mailbox
                    outcome = exc
                results.append((kwargs, outcome))
                if on_done:
                    on_done(kwargs, outcome)
    return results
