"""A worker: claims jobs it can do, runs their handlers, reports outcomes.

``bulwark worker`` runs one on a proxy host; ``bulwark serve`` runs one in process. Each
worker keeps its row in ``proxies`` fresh so operators see what is alive and what it can
reach.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.db.models import Proxy
from app.db.session import Database
from app.domain.jobs import EventLevel, JobState
from app.jobs.context import (
    JobCancelled,
    JobContext,
    JobResult,
    LeaseLost,
    PermanentError,
    is_permanent,
)
from app.jobs.engine import ClaimedJob, JobEngine
from app.jobs.handlers import Handler, HandlerRegistry
from app.jobs.handlers import registry as default_registry

if TYPE_CHECKING:
    from app.state import Runtime

log = logging.getLogger(__name__)

# Failures that point at Bulwark's own code rather than at what it talks to.
PROGRAMMING_ERRORS = (AttributeError, NameError, TypeError, KeyError, IndexError, AssertionError)


def _result_record(result: JobResult | None) -> dict:
    """What is kept of a handler's result on the job row (``jobs.result``)."""
    if result is None:
        return {"partial": False, "message": "", "details": {}}
    return {"partial": result.partial, "message": result.message, "details": result.details}


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Worker:
    """Runs up to ``concurrency`` jobs at once, each in its own thread.

    ``target`` is a :class:`Runtime` (handlers then see ``ctx.runtime``) or a bare
    :class:`Database`. Timing knobs default to production values; tests shrink them.
    """

    def __init__(
        self,
        target: Runtime | Database,
        name: str,
        capabilities: Iterable[str] = (),
        concurrency: int = 1,
        *,
        registry: HandlerRegistry | None = None,
        hostname: str | None = None,
        lease_seconds: float = 60.0,
        heartbeat_interval: float | None = None,
        cancel_poll_interval: float = 1.0,
        poll_interval: float = 2.0,
        retry_base_s: float = 30.0,
        retry_cap_s: float = 1800.0,
        limits: Mapping[str, int] | None = None,
        default_limits: Mapping[str, int] | None = None,
        shutdown_grace_s: float = 15.0,
        engine: JobEngine | None = None,
    ):
        if not name or len(name) > 64:
            raise ValueError("a worker name is 1 to 64 characters")
        if isinstance(target, Database):
            self.runtime: Runtime | None = None
            self.db = target
        else:
            self.runtime = target
            self.db = target.db
        self.name = name
        self.capabilities = sorted(set(capabilities))
        self.concurrency = max(1, concurrency)
        self.registry = registry if registry is not None else default_registry
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self.engine = engine or JobEngine(
            self.db,
            lease_seconds=lease_seconds,
            retry_base_s=retry_base_s,
            retry_cap_s=retry_cap_s,
            limits=limits,
            default_limits=default_limits,
        )
        lease = self.engine.lease.total_seconds()
        self.heartbeat_interval = heartbeat_interval or max(0.05, lease / 4)
        self.cancel_poll_interval = cancel_poll_interval
        self.poll_interval = poll_interval
        self.shutdown_grace_s = shutdown_grace_s
        self._running: dict[int, tuple[threading.Thread, JobContext | None]] = {}
        self._running_lock = threading.Lock()
        self._slot_freed = threading.Event()
        self._stopping = threading.Event()
        self._registered = False

    # -- proxies row ----------------------------------------------------------------------

    def register(self) -> None:
        """Create or refresh this worker's row in ``proxies`` (at start)."""
        self._upsert_proxy(starting=True)
        self._registered = True

    def heartbeat(self) -> None:
        """Refresh ``proxies.last_heartbeat_at`` (and capabilities, which may have changed)."""
        self._upsert_proxy(starting=False)

    def _upsert_proxy(self, *, starting: bool) -> None:
        now = self.engine.clock()
        for _ in range(2):
            try:
                with self.db.session() as session:
                    proxy = session.scalar(select(Proxy).where(Proxy.name == self.name))
                    if proxy is None:
                        session.add(
                            Proxy(
                                name=self.name,
                                hostname=self.hostname,
                                capabilities=list(self.capabilities),
                                started_at=now,
                                last_heartbeat_at=now,
                            )
                        )
                    else:
                        proxy.hostname = self.hostname
                        proxy.capabilities = list(self.capabilities)
                        proxy.last_heartbeat_at = now
                        if starting:
                            proxy.started_at = now
                return
            except IntegrityError:  # another process inserted the same name; update it
                continue

    # -- running jobs ---------------------------------------------------------------------

    @property
    def kinds(self):
        return self.registry.kinds_for(self.capabilities)

    def claim(self) -> ClaimedJob | None:
        return self.engine.claim(self.name, self.capabilities, self.kinds)

    def run_once(self) -> int | None:
        """Claim at most one job and run it in this thread; returns its id, or None."""
        if not self._registered:
            self.register()
        job = self.claim()
        if job is None:
            return None
        self.execute(job)
        return job.id

    def run_forever(self, stop_event: threading.Event) -> None:
        """Claim and run jobs until ``stop_event`` is set, then stop running ones cleanly."""
        kinds = self.kinds
        self._stopping.clear()
        log.info(
            "worker %s on %s: capabilities %s, kinds %s, concurrency %d",
            self.name,
            self.hostname,
            ",".join(self.capabilities) or "-",
            ",".join(kinds) or "none",
            self.concurrency,
        )
        next_proxy_beat = 0.0
        failures = 0
        while not stop_event.is_set():
            try:
                if not self._registered:
                    self.register()
                    next_proxy_beat = time.monotonic() + self.heartbeat_interval
                elif time.monotonic() >= next_proxy_beat:
                    self.heartbeat()
                    next_proxy_beat = time.monotonic() + self.heartbeat_interval
                self._reap()
                while self._free_slots() and not stop_event.is_set():
                    job = self.claim()
                    if job is None:
                        break
                    self._start_thread(job)
                failures = 0
            except Exception:
                failures += 1
                log.exception("worker %s: loop error (%d in a row)", self.name, failures)
            self._slot_freed.clear()
            wait = self.poll_interval * min(2 ** min(failures, 5), 30) if failures else None
            deadline = time.monotonic() + (wait or self.poll_interval)
            # Wake early when a job finishes so a free slot is filled at once.
            while not stop_event.is_set() and time.monotonic() < deadline:
                if self._slot_freed.wait(min(0.2, self.poll_interval)) and not failures:
                    break
        self.stop_running(self.shutdown_grace_s)

    def _free_slots(self) -> int:
        with self._running_lock:
            return self.concurrency - len(self._running)

    def _reap(self) -> None:
        with self._running_lock:
            for job_id, (thread, _) in list(self._running.items()):
                if not thread.is_alive():
                    del self._running[job_id]

    def _start_thread(self, job: ClaimedJob) -> None:
        thread = threading.Thread(
            target=self._thread_main, args=(job,), name=f"job-{job.id}", daemon=True
        )
        with self._running_lock:
            self._running[job.id] = (thread, None)
        thread.start()

    def _thread_main(self, job: ClaimedJob) -> None:
        try:
            self.execute(job)
        except Exception:
            log.exception("worker %s: job %s crashed the runner", self.name, job.id)
        finally:
            self._slot_freed.set()

    def stop_running(self, grace_s: float) -> None:
        """Ask running jobs to stop and go back to the queue; wait up to ``grace_s``."""
        self._stopping.set()
        with self._running_lock:
            running = list(self._running.items())
        for _, (_, ctx) in running:
            if ctx is not None:
                ctx.shutdown()
        deadline = time.monotonic() + grace_s
        for job_id, (thread, _) in running:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning(
                    "worker %s: job %s did not stop in time; its lease will expire",
                    self.name,
                    job_id,
                )
        self._reap()

    def new_context(self, job: ClaimedJob) -> JobContext:
        return JobContext(
            self.engine,
            job,
            self.name,
            runtime=self.runtime,
            heartbeat_interval=self.heartbeat_interval,
            poll_interval=self.cancel_poll_interval,
        )

    def execute(self, job: ClaimedJob) -> JobState | None:
        """Run one claimed job to an outcome; returns the state it was left in."""
        handler = self.registry.get(job.kind)
        ctx = self.new_context(job)
        with self._running_lock:
            if job.id in self._running:
                self._running[job.id] = (self._running[job.id][0], ctx)
                if self._stopping.is_set():
                    ctx.shutdown()
        ctx.start()
        try:
            return self._execute(job, handler, ctx)
        finally:
            ctx.close()

    def _execute(self, job: ClaimedJob, handler: Handler | None, ctx: JobContext):
        engine, name = self.engine, self.name
        if handler is None:  # registry changed after the claim
            return engine.fail(job.id, name, f"no handler for {job.kind} jobs", retry=False)
        if ctx.leftovers:
            why = f"taken over from {job.taken_over_from}" if job.taken_over_from else "retry"
            problem = self._cleanup(ctx, handler, why)
            if problem is not None:
                if ctx.lease_lost:
                    return None
                if job.cancel_requested or ctx.cancel_requested:
                    return JobState.CANCELLED if engine.cancel(job.id, name) else None
                return engine.fail(
                    job.id, name, f"leftovers of an earlier attempt remain: {problem}"
                )
        if job.cancel_requested or ctx.cancel_requested:
            return JobState.CANCELLED if engine.cancel(job.id, name) else None
        if ctx.shutting_down and job.rerun:
            engine.release(job.id, name, f"worker {name} is stopping")
            return JobState.QUEUED
        if not job.rerun:
            return engine.fail(
                job.id,
                name,
                f"worker {job.taken_over_from} stopped responding during the last attempt",
                retry=False,
            )

        outcome: tuple[str, object] = ("ok", None)
        try:
            result = handler.run(ctx)
            if ctx.lease_lost:
                outcome = ("lost", None)
            elif ctx.cancel_seen and ctx.shutting_down:
                outcome = ("released", None)
            elif ctx.cancel_seen and ctx.cancel_requested and not isinstance(result, JobResult):
                outcome = ("cancelled", None)
            else:
                outcome = ("ok", result)
        except LeaseLost:
            outcome = ("lost", None)
        except JobCancelled:
            outcome = ("released", None) if ctx.shutting_down else ("cancelled", None)
        except PermanentError as exc:
            outcome = ("fatal", exc)
        except Exception as exc:
            # An outside system saying no (vCenter, the array, the repository) is one line; a
            # traceback is kept for what looks like a bug in Bulwark itself.
            log.warning(
                "job %s (%s) attempt %d failed: %s: %s",
                job.id,
                job.kind,
                job.attempt,
                type(exc).__name__,
                exc,
                exc_info=isinstance(exc, PROGRAMMING_ERRORS),
            )
            if ctx.lease_lost:
                outcome = ("lost", None)
            elif ctx.shutting_down:
                outcome = ("released", exc)
            elif ctx.cancel_requested:
                outcome = ("cancelled", exc)
            elif is_permanent(exc):
                # A missing object or an untrusted certificate stays so: failing at once
                # says why now, not after every retry and its backoff.
                outcome = ("fatal", exc)
            else:
                outcome = ("error", exc)

        kind, value = outcome
        if kind == "lost":
            log.warning("job %s: lease lost by %s; outcome dropped", job.id, name)
            return None
        if ctx.leftovers:
            self._cleanup(ctx, handler, "end of attempt")
        if kind == "ok":
            result = value if isinstance(value, JobResult) else None
            if ctx.cancel_requested:
                ctx.event("cancel came after the work was done", EventLevel.WARNING)
            progress, events = ctx.detach()  # written with the final state
            ok = engine.succeed(
                job.id,
                name,
                partial=bool(result and result.partial),
                message=(result.message if result else ""),
                events=events,
                progress=progress,
                result=_result_record(result),
            )
            if not ok:
                return None
            return JobState.PARTIALLY_SUCCEEDED if result and result.partial else JobState.SUCCEEDED
        ctx.close()  # last progress and events before the final state
        if kind == "released":
            engine.release(job.id, name, f"worker {name} is stopping")
            return JobState.QUEUED
        if kind == "cancelled":
            note = f" (handler stopped with {_describe(value)})" if value else ""
            return JobState.CANCELLED if engine.cancel(job.id, name, "cancelled" + note) else None
        if kind == "fatal":
            fix = getattr(value, "fix", None)
            return engine.fail(job.id, name, _describe(value), retry=False, fix=fix)
        return engine.fail(job.id, name, _describe(value), retry=True)

    def _cleanup(self, ctx: JobContext, handler: Handler, why: str) -> str | None:
        """Run the handler's cleanup; None when nothing is left, else what went wrong."""
        leftovers = ctx.leftovers
        summary = ", ".join(
            sorted({str(x.get("type") or x.get("kind") or "item") for x in leftovers})
        )
        if handler.cleanup is None:
            ctx.event(
                f"{len(leftovers)} leftover(s) ({summary}) but {handler.kind} jobs have no "
                "cleanup; left for an operator",
                EventLevel.ERROR,
            )
            return f"{handler.kind} jobs have no cleanup"
        ctx.event(f"cleaning up {len(leftovers)} leftover(s) ({summary}) [{why}]", step="cleanup")
        try:
            handler.cleanup(ctx, leftovers)
            ctx.clear_leftovers()
        except LeaseLost:
            return "lease lost"
        except Exception as exc:
            log.warning("job %s: cleanup failed", ctx.job_id, exc_info=True)
            ctx.event(f"cleanup failed: {_describe(exc)}", EventLevel.ERROR, step="cleanup")
            return _describe(exc)
        ctx.event("leftovers cleaned up", step="cleanup")
        return None
