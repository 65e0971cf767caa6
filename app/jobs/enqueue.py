"""One way to create work: ``enqueue`` writes a job, its first event and its audit record.

In the spirit of Pulp's ``dispatch``: every job Bulwark runs is created here, by the API and
the dashboard, by the scheduler, by a policy-wide backup queueing one job per target, and by
repository upkeep. The caller says what to do (kind, target, params) and who asks; what the
job needs of a worker (``required_capabilities``) and which outside resources it loads
(hosts, datastores, arrays: the engine's per-resource limits count them) are asked of the
handler registered for the kind (``Handler.requires``, see handlers.py), which for restores
asks the restore mode. Only a job copied from an earlier one (a retry) brings its own.

The job is added to the caller's session and flushed (it has an id); it becomes visible to
workers when the caller's transaction commits, together with its event and audit record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.audit import Actor, record
from app.db.models import Job, JobEvent
from app.db.types import utcnow
from app.domain.jobs import EventLevel, JobKind
from app.jobs.handlers import HandlerRegistry, JobRequest
from app.jobs.handlers import registry as default_registry


def enqueue(
    session: Session,
    kind: JobKind | str,
    *,
    actor: Actor,
    params: Mapping[str, Any] | None = None,
    policy_id: int | None = None,
    server_id: int | None = None,
    database_id: int | None = None,
    parent_id: int | None = None,
    capabilities: Iterable[str] | None = None,
    resources: Iterable[str] | None = None,
    max_attempts: int | None = None,
    leftovers: list[dict[str, Any]] | None = None,
    at: datetime | None = None,
    events: Iterable[str] = (),
    audit_action: str | None = None,
    audit_detail: Mapping[str, Any] | None = None,
    audit: bool = True,
    registry: HandlerRegistry | None = None,
) -> Job:
    """Queue a job of ``kind`` for ``actor``; returns it (flushed, with its id).

    ``capabilities`` and ``resources`` replace what the kind's handler would say (a retry
    keeps the failed job's). ``events`` are the job's first log lines (why it was made,
    when the audit record alone does not say it: the scheduler's "scheduled by policy …";
    never the params, which may hold secrets). The audit record is ``job.<kind>`` with
    the params unless ``audit_action`` and ``audit_detail`` say otherwise; ``audit=False``
    only for jobs another, audited job queues (a policy-wide run's per-target jobs).
    """
    kind = JobKind(kind)
    params = dict(params or {})
    if capabilities is None or resources is None:
        handler = (registry or default_registry).get(kind)
        needs = (
            handler.requirements(
                session, JobRequest(kind, params, policy_id, server_id, database_id)
            )
            if handler is not None
            else None
        )
        if capabilities is None:
            capabilities = needs.capabilities if needs else ()
        if resources is None:
            resources = needs.resources if needs else ()
    now = at or utcnow()
    job = Job(
        kind=kind,
        policy_id=policy_id,
        server_id=server_id,
        database_id=database_id,
        parent_id=parent_id,
        params=params,
        required_capabilities=_unique(capabilities),
        resources=sorted(set(resources)),
        leftovers=list(leftovers or []),
        created_by=actor.name,
        created_at=now,
        not_before=now,
    )
    if max_attempts is not None:
        job.max_attempts = max_attempts
    session.add(job)
    session.flush()
    session.add_all(
        JobEvent(job_id=job.id, at=now, level=EventLevel.INFO, message=line) for line in events
    )
    if audit:
        detail = dict(params if audit_detail is None else audit_detail)
        record(session, actor, audit_action or f"job.{kind}", "job", job.id, **detail)
    return job


def _unique(values: Iterable[str]) -> list[str]:
    """In the order given, each once (a worker's capabilities are matched as a set)."""
    return list(dict.fromkeys(str(v) for v in values))
