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

``capabilities`` are what a worker must declare to run this kind at all (e.g. ``vcenter``).
``requires(session, request) -> Requirements`` says what one job of the kind needs on top
(a backup: the proxy capability its method declares, and the host and datastores its VM
loads; a restore: what its restore mode needs): ``enqueue`` asks it when the job is made,
so the rule lives beside the handler and not with each caller.

Which modules register the product's handlers is the composition root's knowledge
(app/composition.py), not this layer's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.domain.jobs import JobKind

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.jobs.context import JobContext, JobResult


@dataclass(frozen=True)
class JobRequest:
    """A job about to be made: what ``requires`` decides from."""

    kind: JobKind
    params: dict[str, Any] = field(default_factory=dict)
    policy_id: int | None = None
    server_id: int | None = None
    database_id: int | None = None


@dataclass(frozen=True)
class Requirements:
    capabilities: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()


RunFn = Callable[["JobContext"], "JobResult | None"]
CleanupFn = Callable[["JobContext", list[dict[str, Any]]], None]
RequiresFn = Callable[["Session", JobRequest], Requirements]


@dataclass(frozen=True)
class Handler:
    kind: JobKind
    run: RunFn
    cleanup: CleanupFn | None = None
    capabilities: frozenset[str] = frozenset()
    requires: RequiresFn | None = None

    def requirements(self, session: Session, request: JobRequest) -> Requirements:
        """What a job of this kind needs: the kind's capabilities, then the job's own."""
        own = self.requires(session, request) if self.requires else Requirements()
        return Requirements(
            tuple(dict.fromkeys([*sorted(self.capabilities), *own.capabilities])),
            tuple(sorted(set(own.resources))),
        )


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
        requires: RequiresFn | None = None,
    ) -> Handler:
        handler = Handler(JobKind(kind), run, cleanup, frozenset(capabilities), requires)
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
    requires: RequiresFn | None = None,
) -> Handler:
    """Register the process-wide handler for ``kind`` (replacing an earlier one)."""
    return registry.register(kind, run, cleanup, capabilities, requires)
