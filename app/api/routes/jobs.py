"""Jobs: start, watch, cancel. Workers run them (see app.jobs)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.api import API_PREFIX
from app.api.deps import DbSession, Reader, require
from app.api.pagination import Page, PageWindow, paginate
from app.api.problems import Problem, conflict, found, invalid, not_found
from app.api.schemas.jobs import JobCreate, JobDetail, JobOut, ProxyOut
from app.audit import record
from app.db.models import (
    Connection,
    ExchangeServer,
    Job,
    MailboxRestorePoint,
    Policy,
    Proxy,
    RestorePoint,
)
from app.db.types import utcnow
from app.domain.connections import ConnectionKind
from app.domain.job_params import client_params_problem
from app.domain.jobs import JobKind, JobState, run_state
from app.domain.protection import RestoreRefused
from app.jobs.enqueue import enqueue
from app.protection.restores import registry as restore_modes
from app.security.roles import Permission

router = APIRouter(prefix=API_PREFIX, tags=["jobs"])
SORTABLE = {
    "created_at": Job.created_at,
    "state": Job.state,
    "kind": Job.kind,
    "finished_at": Job.finished_at,
}


def get_job(session: Session, job_id: int) -> Job:
    return found(session.get(Job, job_id), "job", job_id)


@router.get("/jobs", response_model=Page[JobOut], summary="List jobs")
def list_jobs(
    session: DbSession,
    _: Reader,
    state: JobState | None = None,
    kind: JobKind | None = None,
    policy_id: int | None = None,
    server_id: int | None = None,
    parent_id: int | None = Query(default=None, description="Jobs queued by this job"),
    since: datetime | None = Query(default=None, description="Created at or after"),
    sort: str | None = Query(default=None, description="created_at, state, kind, finished_at"),
    window: PageWindow = Depends(),
):
    query = select(Job)
    for column, value in (
        (Job.state, state),
        (Job.kind, kind),
        (Job.policy_id, policy_id),
        (Job.server_id, server_id),
        (Job.parent_id, parent_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(Job.created_at >= since)
    return paginate(session, query, window, sort, sortable=SORTABLE, default_sort="-created_at")


def _validate(session: Session, body: JobCreate) -> None:
    problem = client_params_problem(body.kind, body.params)
    if problem:
        raise invalid(problem, "params")
    if body.kind == JobKind.BACKUP and body.policy_id is None:
        raise invalid("a backup job needs policy_id", "policy_id")
    if body.policy_id is not None and session.get(Policy, body.policy_id) is None:
        raise invalid(f"policy {body.policy_id} does not exist", "policy_id")
    if body.server_id is not None and session.get(ExchangeServer, body.server_id) is None:
        raise invalid(f"Exchange server {body.server_id} does not exist", "server_id")
    if body.kind == JobKind.SYNC:
        conn = session.get(Connection, body.connection_id) if body.connection_id else None
        if conn is None or conn.kind != ConnectionKind.VCENTER:
            raise invalid("a sync job needs the connection_id of a vCenter", "connection_id")
    if body.kind == JobKind.VERIFY and "mailbox_restore_point_id" in body.params:
        point_id = body.params["mailbox_restore_point_id"]
        if not isinstance(point_id, int) or session.get(MailboxRestorePoint, point_id) is None:
            raise invalid(
                f"mailbox restore point {point_id!r} does not exist", "mailbox_restore_point_id"
            )
        return
    if body.kind in (JobKind.RESTORE, JobKind.VERIFY):
        if body.restore_point_id is None:
            raise invalid(f"a {body.kind} job needs restore_point_id", "restore_point_id")
        point = session.get(RestorePoint, body.restore_point_id)
        if point is None:
            raise invalid(
                f"restore point {body.restore_point_id} does not exist", "restore_point_id"
            )
        if body.kind == JobKind.RESTORE:
            _confirm_restore(session, point, body.params)


def _confirm_restore(session: Session, point: RestorePoint, params: dict) -> None:
    """The restore mode checks the request (a destructive one is confirmed by a typed name)."""
    server = session.get(ExchangeServer, point.server_id) if point.server_id else None
    if server is None:
        raise invalid("the restore point's server no longer exists", "restore_point_id")
    mode = restore_modes.find(point, params)
    if mode is None or mode.confirm is None:
        names = [f"'{n}'" for n in restore_modes.offered(point)]
        listed = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        raise invalid(
            f"restore mode '{restore_modes.mode_name(params)}' does not apply to this restore "
            f"point; restore modes available here are {listed}",
            "params",
        )
    try:
        mode.confirm(point, server.name, params)
    except RestoreRefused as exc:
        raise invalid(str(exc), exc.field) from exc


@router.post("/jobs", response_model=JobOut, status_code=202, summary="Start a job")
def create_job(body: JobCreate, session: DbSession, principal: Reader):
    needed = Permission.RUN_RESTORE if body.kind == JobKind.RESTORE else Permission.RUN_BACKUP
    if not principal.can(needed):
        raise Problem(
            403,
            f"role '{principal.role}' may not start {body.kind} jobs",
            type_="/problems/forbidden",
        )
    _validate(session, body)
    params = dict(body.params)
    for key in ("restore_point_id", "connection_id"):
        if getattr(body, key) is not None:
            params[key] = getattr(body, key)
    server_id = body.server_id
    if body.kind == JobKind.RESTORE:
        params["requested_by"] = principal.actor.name
        # Restores take the server's slot: never beside a backup of the same server.
        point = session.get(RestorePoint, body.restore_point_id)
        server_id = point.server_id
    return enqueue(
        session,
        body.kind,
        actor=principal.actor,
        params=params,
        policy_id=body.policy_id,
        server_id=server_id,
        database_id=body.database_id,
    )


@router.get("/jobs/{job_id}", response_model=JobDetail, summary="Read a job and its events")
def read_job(job_id: int, session: DbSession, _: Reader):
    job = session.scalar(select(Job).where(Job.id == job_id).options(selectinload(Job.events)))
    if job is None:
        raise not_found("job", job_id)
    children = list(session.scalars(select(Job).where(Job.parent_id == job_id).order_by(Job.id)))
    return JobDetail.model_validate(
        {
            **JobOut.model_validate(job).model_dump(),
            "events": job.events,
            "children": children,
            "run_state": run_state(job.state, [c.state for c in children]),
        }
    )


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, summary="Ask a job to stop")
def cancel_job(job_id: int, session: DbSession, principal=require(Permission.RUN_BACKUP)):
    job = get_job(session, job_id)
    if job.state.finished:
        raise conflict(f"job {job_id} already {job.state}")
    job.cancel_requested = True
    if job.state == JobState.QUEUED:
        job.state = JobState.CANCELLED
        job.finished_at = utcnow()
    record(session, principal.actor, "job.cancel", "job", job.id)
    return job


@router.post(
    "/jobs/{job_id}/retry",
    response_model=JobOut,
    status_code=202,
    summary="Run a failed or cancelled job again, as a new job",
)
def retry_job(job_id: int, session: DbSession, principal: Reader):
    old = get_job(session, job_id)
    needed = Permission.RUN_RESTORE if old.kind == JobKind.RESTORE else Permission.RUN_BACKUP
    if not principal.can(needed):
        raise Problem(
            403,
            f"role '{principal.role}' may not start {old.kind} jobs",
            type_="/problems/forbidden",
        )
    if old.state not in (JobState.FAILED, JobState.CANCELLED, JobState.PARTIALLY_SUCCEEDED):
        raise conflict(f"job {job_id} is {old.state}; only failed or cancelled jobs are retried")
    if old.kind == JobKind.RESTORE and "confirm" in old.params:
        # A confirmation was typed for that moment; replaying it days later would overwrite
        # data nobody confirmed now.
        raise conflict(
            f"job {job_id} was a restore confirmed by typing a name; start it again from its "
            "restore point and confirm again"
        )
    params = {k: v for k, v in old.params.items() if k != "scheduled_for"}
    job = enqueue(
        session,
        old.kind,
        actor=principal.actor,
        params={**params, "retry_of": old.id},
        policy_id=old.policy_id,
        server_id=old.server_id,
        database_id=old.database_id,
        # What the old job needed it needs again.
        capabilities=old.required_capabilities or [],
        resources=old.resources or [],
        # What the failed job left in the outside world moves with it: the new job's first
        # attempt cleans it up before running.
        leftovers=list(old.leftovers),
        audit_action="job.retry",
        audit_detail={"retry_of": old.id},
    )
    old.leftovers = []
    return job


@router.get("/proxies", response_model=list[ProxyOut], summary="Workers and their heartbeats")
def list_proxies(session: DbSession, _: Reader):
    return session.scalars(select(Proxy).order_by(Proxy.name)).all()
