"""Which code runs which kind of job.

A handler is ``run(ctx) -> JobResult | None``; raising ends the attempt as failed (retried
with backoff while attempts remain), raising :class:`~app.jobs.context.PermanentError` fails
at once, raising :class:`~app.jobs.context.JobCancelled` (or returning after seeing
``ctx.cancelled()``) ends it cancelled.

``cleanup(ctx, leftovers)`` removes what an earlier, interrupted attempt left in the
outside world (each item is a dict the handler stored with ``ctx.add_leftover``). It is
called before a job taken over from a dead worker runs again, and after any attempt that
ended with leftovers still recorded. It should be idempotent (a leftover may already be gone)
and may call ``ctx.remove_leftover`` as it goes; when it returns, all are forgotten.

``capabilities`` are what a worker must declare to run this kind at all (e.g. ``vcenter``);
a job's own ``required_capabilities`` come on top.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.domain.jobs import JobKind

if TYPE_CHECKING:
    from app.jobs.context import JobContext, JobResult

RunFn = Callable[["JobContext"], "JobResult | None"]
CleanupFn = Callable[["JobContext", list[dict[str, Any]]], None]

# Modules that register the product's handlers when imported; the worker imports them.
HANDLER_MODULES: tuple[str, ...] = (
    "app.protection.handlers.backup",
    "app.protection.handlers.restore",
    "app.inventory.sync_job",
    "app.protection.handlers.verify",
    "app.protection.handlers.expire",
)


@dataclass(frozen=True)
class Handler:
    kind: JobKind
    run: RunFn
    cleanup: CleanupFn | None = None
    capabilities: frozenset[str] = frozenset()


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[JobKind, Handler] = {}
        self._lock = threading.Lock()

    def register(
        self,
        kind: JobKind | str,
        run: RunFn,
        cleanup: CleanupFn | None = None,
        capabilities: Iterable[str] = (),
    ) -> Handler:
        handler = Handler(JobKind(kind), run, cleanup, frozenset(capabilities))
        with self._lock:
            self._handlers[handler.kind] = handler
        return handler

    def unregister(self, kind: JobKind | str) -> None:
        with self._lock:
            self._handlers.pop(JobKind(kind), None)

    def get(self, kind: JobKind | str) -> Handler | None:
        return self._handlers.get(JobKind(kind))

    def kinds_for(self, capabilities: Iterable[str]) -> list[JobKind]:
        """Kinds a worker with these capabilities can run."""
        caps = set(capabilities)
        with self._lock:
            return sorted(k for k, h in self._handlers.items() if h.capabilities <= caps)

    def __contains__(self, kind: object) -> bool:
        return kind in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)


registry = HandlerRegistry()


def register(
    kind: JobKind | str,
    run: RunFn,
    cleanup: CleanupFn | None = None,
    capabilities: Iterable[str] = (),
) -> Handler:
    """Register the process-wide handler for ``kind`` (replacing an earlier one)."""
    return registry.register(kind, run, cleanup, capabilities)


def load_handlers(modules: Iterable[str] = HANDLER_MODULES) -> None:
    """Import the modules that register the product's handlers."""
    for name in modules:
        importlib.import_module(name)
