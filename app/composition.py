"""The composition root: what the job layer is handed from the layers above it.

``app/jobs`` knows queues, leases and schedules, not what Bulwark's jobs do. Here the
product is put together: the modules that register the job handlers, the scheduler's
further sources (repository expiry and verification) and its notifier, and the scheduler and
worker that ``bulwark serve`` runs in the background.
"""

from __future__ import annotations

import importlib
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from app.jobs.background import BackgroundJobs
from app.jobs.handlers import HandlerRegistry
from app.jobs.scheduler import JobSource, Scheduler
from app.jobs.worker import Worker
from app.notifications import Notifier

if TYPE_CHECKING:
    from app.state import Runtime

# Modules that register the product's handlers (and the mail archive's reference source for
# garbage collection, see app/repository/references.py) when imported.
HANDLER_MODULES: tuple[str, ...] = (
    "app.mailboxes.store",
    "app.protection.handlers.backup",
    "app.protection.handlers.restore",
    "app.inventory.sync_job",
    "app.protection.handlers.verify",
    "app.protection.handlers.expire",
    "app.protection.handlers.copy",
)


def load_handlers(modules: Iterable[str] = HANDLER_MODULES) -> None:
    """Import the modules that register the product's handlers."""
    for name in modules:
        importlib.import_module(name)


def upkeep_sources(expire_every: int, verify_every: int, sample: float) -> list[JobSource]:
    """Repository upkeep as scheduler sources: an expire job per repository every
    ``expire_every`` minutes, a verify job (of a ``sample`` share) every ``verify_every``;
    0 turns one off."""
    from app.protection.handlers.expire import schedule_expiry
    from app.protection.handlers.verify import schedule_verification

    sources: list[JobSource] = []
    if expire_every:
        sources.append(lambda session, now: schedule_expiry(session, now, expire_every))
    if verify_every:
        sources.append(
            lambda session, now: schedule_verification(session, now, verify_every, sample)
        )
    return sources


def scheduler_for(runtime: Runtime) -> Scheduler:
    """The scheduler of ``bulwark serve``, with everything its settings turn on."""
    settings = runtime.settings
    return Scheduler(
        runtime.db,
        resync_minutes=settings.inventory_resync_minutes,
        notifier=Notifier(settings, runtime.secrets),
        sources=upkeep_sources(
            settings.repository_expire_minutes,
            settings.repository_verify_minutes,
            settings.repository_verify_sample,
        ),
    )


def start_background(
    runtime: Runtime,
    *,
    worker_name: str | None = None,
    capabilities: Iterable[str] = (),
    concurrency: int = 1,
    scheduler: bool = True,
    worker: bool = True,
    scheduler_interval: float = 30.0,
    registry: HandlerRegistry | None = None,
    worker_options: dict[str, Any] | None = None,
) -> BackgroundJobs:
    """Start the scheduler and an in-process worker; call ``.stop()`` on shutdown."""
    if registry is None:
        load_handlers()
    sched = scheduler_for(runtime) if scheduler else None
    work = None
    if worker:
        name = worker_name or f"{socket.gethostname()}-serve"[:64]
        work = Worker(
            runtime,
            name,
            capabilities,
            concurrency,
            registry=registry,
            **(worker_options or {}),
        )
    return BackgroundJobs(sched, work).start(scheduler_interval)
