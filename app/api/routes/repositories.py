"""Repositories: usage, verify and expire jobs, and the RPO counted on verified restore points.

A repository is a connection of kind ``repository`` (created and tested under
``/connections``); these endpoints are about what it holds.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api import API_PREFIX
from app.api.deps import DbSession, Reader, require, runtime
from app.api.problems import Problem, found, invalid, not_found
from app.api.schemas.inventory import ConnectionTestOut
from app.api.schemas.repositories import (
    CopyRequest,
    JobQueuedOut,
    RepositoryOut,
    RepositoryUsageOut,
    VerifiedRpoOut,
    VerifyRequest,
)
from app.audit import record
from app.db.models import Connection, Policy, RepositoryUsage, RestorePoint
from app.db.types import utcnow
from app.domain.connections import ConnectionKind, ConnectionStatus
from app.domain.jobs import JobKind
from app.domain.protection import CopyLocation
from app.jobs.enqueue import enqueue
from app.protection.catalog import captures
from app.repository import RepositoryError, open_repository
from app.repository.connection import check_repository
from app.repository.gc import live_digests
from app.security.roles import Permission
from app.state import Runtime

router = APIRouter(prefix=API_PREFIX + "/repositories", tags=["repositories"])
Runner = require(Permission.RUN_BACKUP)


def test_repository(session: Session, conn: Connection, actor, rt: Runtime) -> ConnectionTestOut:
    """``POST /connections/{id}/test`` for a repository: initialise, write, read."""
    check = check_repository(conn, rt.settings.root_key())
    conn.status = ConnectionStatus.OK if check.ok else ConnectionStatus.FAILED
    conn.last_checked_at = utcnow()
    conn.last_error = None if check.ok else check.message
    record(
        session,
        actor,
        "connection.test",
        "connection",
        conn.id,
        outcome="success" if check.ok else "failure",
        message=check.message,
    )
    return ConnectionTestOut(ok=check.ok, message=check.message, about=check.about)


def _repository(session: Session, repository_id: int) -> Connection:
    conn = session.get(Connection, repository_id)
    if conn is None or conn.kind != ConnectionKind.REPOSITORY:
        raise not_found("repository", repository_id)
    return conn


def _where(options: dict) -> str:
    """The directory, or ``s3://bucket/prefix`` at its endpoint."""
    if options.get("backend") == "s3":
        return f"s3://{options.get('bucket', '?')}/{options.get('prefix', '')} at " + str(
            options.get("endpoint", "?")
        )
    return options.get("path", "")


def _out(conn: Connection, usage: RepositoryUsage | None) -> RepositoryOut:
    options = conn.options or {}
    return RepositoryOut(
        id=conn.id,
        name=conn.name,
        path=_where(options),
        encrypted=bool(options.get("encrypted", False)),
        status=conn.status,
        usage=_usage_out(usage) if usage else None,
    )


def _usage_out(usage: RepositoryUsage) -> RepositoryUsageOut:
    out = RepositoryUsageOut.model_validate(usage)
    out.dedup_ratio = round(usage.dedup_ratio, 2) if usage.dedup_ratio else None
    return out


def _queue(session: Session, kind: JobKind, params: dict, actor) -> JobQueuedOut:
    return JobQueuedOut(job_id=enqueue(session, kind, actor=actor, params=params).id)


@router.get("/verified-rpo", response_model=list[VerifiedRpoOut], summary="Verified RPO")
def verified_rpo(session: DbSession, request: Request, _: Reader):
    """Per policy: the age of the newest *verified* restore point of its worst target."""
    every = runtime(request).settings.repository_verify_minutes
    return verified_rpo_by_policy(session, utcnow(), verify_minutes=every)


def verified_rpo_by_policy(
    session: Session,
    now: datetime,
    *,
    with_repository_only: bool = False,
    verify_minutes: int | None = 1440,
) -> list[VerifiedRpoOut]:
    """Per policy, the age of the newest verified restore point of its worst target. A
    target not verified yet is neutral until its first verify is due (``verify_minutes``
    after its first restore point, or after the policy began when it has none yet)."""
    query = select(Policy).order_by(Policy.name)
    if with_repository_only:
        query = query.where(Policy.repository_id.is_not(None))
    policies = session.scalars(query).all()
    if not policies:
        return []
    newest = captures.newest(session, verified=True)
    first = captures.first(session)
    grace = timedelta(minutes=verify_minutes) if verify_minutes else None
    out = []
    for policy in policies:
        keys = [(policy.id, t.server_id, t.database_id) for t in policy.targets]
        times = [newest.get(k) for k in keys]
        found = [t for t in times if t is not None]
        waiting = [
            k
            for k, t in zip(keys, times, strict=True)
            if t is None and grace is not None and now < (first.get(k) or policy.created_at) + grace
        ]
        worst = min(found) if found and len(found) == len(times) else None
        age = int((now - worst).total_seconds() // 60) if worst else None
        overdue = len(times) - len(found) - len(waiting)  # unverified, its verify was due
        too_old = policy.rpo_minutes is not None and any(
            (now - t).total_seconds() // 60 > policy.rpo_minutes for t in found
        )
        breached = bool(policy.targets) and (overdue > 0 or too_old)
        out.append(
            VerifiedRpoOut(
                policy_id=policy.id,
                policy=policy.name,
                repository_id=policy.repository_id,
                rpo_minutes=policy.rpo_minutes,
                targets=len(times),
                verified_targets=len(found),
                oldest_newest_verified_at=worst,
                verified_rpo_minutes=age,
                breached=breached,
                not_verified_yet=bool(waiting) and not breached,
            )
        )
    return out


@router.get("", response_model=list[RepositoryOut], summary="List repositories with usage")
def list_repositories(session: DbSession, _: Reader):
    conns = session.scalars(
        select(Connection)
        .where(Connection.kind == ConnectionKind.REPOSITORY)
        .order_by(Connection.name)
    ).all()
    usage = {u.connection_id: u for u in session.scalars(select(RepositoryUsage))}
    return [_out(c, usage.get(c.id)) for c in conns]


@router.get("/{repository_id}", response_model=RepositoryOut, summary="Read a repository")
def read_repository(repository_id: int, session: DbSession, _: Reader):
    conn = _repository(session, repository_id)
    return _out(conn, session.get(RepositoryUsage, conn.id))


@router.post(
    "/{repository_id}/usage",
    response_model=RepositoryUsageOut,
    summary="Measure what the repository holds now (walks every object)",
)
def measure_usage(repository_id: int, session: DbSession, request: Request, principal=Runner):
    conn = _repository(session, repository_id)
    try:
        repo = open_repository(session, conn.id, root_key=runtime(request).settings.root_key())
        _live, report = live_digests(repo, session, images_only=True)
    except RepositoryError as exc:
        raise Problem(409, str(exc), type_="/problems/repository") from exc
    chunks, stored = repo.stored_totals()
    usage = session.get(RepositoryUsage, conn.id) or RepositoryUsage(connection_id=conn.id)
    usage.measured_at = utcnow()
    usage.images, usage.chunks = report.images, chunks
    usage.stored_bytes, usage.logical_bytes = stored, report.logical_bytes
    usage.last_gc_removed_chunks = usage.last_gc_removed_chunks or 0
    usage.last_gc_freed_bytes = usage.last_gc_freed_bytes or 0
    session.add(usage)
    session.flush()
    record(session, principal.actor, "repository.measure", "connection", conn.id)
    return _usage_out(usage)


@router.post(
    "/{repository_id}/verify",
    response_model=JobQueuedOut,
    status_code=202,
    summary="Queue a verify job (one restore point, or all on a sampled share of blocks)",
)
def start_verify(repository_id: int, body: VerifyRequest, session: DbSession, principal=Runner):
    conn = _repository(session, repository_id)
    params: dict = {"sample": body.sample}
    if body.restore_point_id is not None:
        point_id = body.restore_point_id
        point = found(session.get(RestorePoint, point_id), "restore point", point_id)
        if point.live_copy(CopyLocation.REPOSITORY, conn.id) is None:
            raise invalid(
                f"restore point {point.id} has no copy in repository '{conn.name}'",
                "restore_point_id",
            )
        params["restore_point_id"] = point.id
    else:
        params["repository_id"] = conn.id
    return _queue(session, JobKind.VERIFY, params, principal.actor)


@router.post(
    "/{repository_id}/copy",
    response_model=JobQueuedOut,
    status_code=202,
    summary="Queue a copy of this repository's restore points into another repository",
)
def start_copy(repository_id: int, body: CopyRequest, session: DbSession, principal=Runner):
    conn = _repository(session, repository_id)
    target = session.get(Connection, body.target_repository_id)
    if target is None or target.kind != ConnectionKind.REPOSITORY:
        raise not_found("repository", body.target_repository_id)
    if target.id == conn.id:
        raise invalid("a copy needs another repository than its source", "target_repository_id")
    params = {"repository_id": conn.id, "target_repository_id": target.id}
    if body.restore_point_id is not None:
        if session.get(RestorePoint, body.restore_point_id) is None:
            raise not_found("restore point", body.restore_point_id)
        params["restore_point_id"] = body.restore_point_id
    return _queue(session, JobKind.COPY, params, principal.actor)


@router.post(
    "/{repository_id}/expire",
    response_model=JobQueuedOut,
    status_code=202,
    summary="Queue retention and garbage collection now",
)
def start_expire(repository_id: int, session: DbSession, principal=Runner):
    conn = _repository(session, repository_id)
    return _queue(session, JobKind.EXPIRE, {"repository_id": conn.id}, principal.actor)
