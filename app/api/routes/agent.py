"""The in-guest agent's API (``/api/v1/agent``) and the operators' enrollment routes.

Agent routes authenticate with the agent credential only (``Bearer bwa_…``) and act only on
the agent's own server: another server's task is 404. Operator routes never accept it (their
authentication takes API tokens and sessions only). Long polls open short database sessions
of their own, so a waiting agent holds no connection.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import select

from app.agent import protocol as p
from app.api import API_PREFIX
from app.api.deps import DbSession, Reader, require, runtime
from app.api.problems import Problem, not_found
from app.audit import Actor, record
from app.db.models import Agent, AgentTask, ExchangeServer
from app.protection.bindings import agents as svc
from app.repository import ChunkDamaged, Repository, RepositoryError, open_repository
from app.security import guard
from app.security.roles import Permission
from app.tls import fingerprint

router = APIRouter(prefix=API_PREFIX + "/agent", tags=["in-guest agent"])


def _guard_identifies(request: Request, session) -> bool:
    """The request guard's question for agent paths: an agent credential, nothing else."""
    try:
        svc.authenticate(session, _credential(request))
    except (svc.AgentProblem, Problem):
        return False
    return True


# Enrollment is open (the one-time code is the credential); chunks are up to a block.
guard.PUBLIC[API_PREFIX + "/agent/enroll"] = 4 << 10
guard.identify_under(API_PREFIX + "/agent/", _guard_identifies)
guard.allow_body(API_PREFIX + "/agent/tasks/", 16 << 20)
admin = APIRouter(prefix=API_PREFIX + "/servers", tags=["in-guest agent"])
Admin = require(Permission.MANAGE_CONNECTIONS)
DIGEST_LENGTH = 64


def _problem(exc: svc.AgentProblem) -> Problem:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return Problem(exc.status, str(exc), type_="/problems/agent", headers=headers)


def _credential(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        raise Problem(401, "send the agent credential as 'Authorization: Bearer <credential>'")
    return auth[7:].strip()


class _Who(BaseModel):
    agent_id: int
    server_id: int


def _agent(request: Request, *, touch: bool = False) -> _Who:
    """Authenticate in a short session of its own (long polls must not hold one). Only the
    heartbeat, the poll and progress mark the agent seen: a write per chunk would cost more
    than the chunk."""
    with runtime(request).db.session() as session:
        try:
            agent = svc.authenticate(session, _credential(request))
        except svc.AgentProblem as exc:
            raise _problem(exc) from None
        if touch:
            svc.seen(session, agent)
        return _Who(agent_id=agent.id, server_id=agent.server_id)


# -- enrollment and heartbeat -----------------------------------------------------------------


class EnrollIn(BaseModel):
    code: str = Field(min_length=4, max_length=64)
    hostname: str = Field(default="", max_length=255)
    version: str = Field(default="", max_length=32)


@router.post("/enroll", summary="Trade a one-time enrollment code for an agent credential")
def enroll(body: EnrollIn, session: DbSession, request: Request) -> dict[str, Any]:
    try:
        agent, credential = svc.enroll(session, body.code, body.hostname, body.version)
    except svc.AgentProblem as exc:
        raise _problem(exc) from None
    server = session.get(ExchangeServer, agent.server_id)
    record(
        session,
        Actor(f"agent/{agent.id}", "agent", request.client.host if request.client else None),
        "agent.enroll",
        "server",
        agent.server_id,
        hostname=agent.hostname,
        version=agent.version,
    )
    return {"agent_id": agent.id, "server": server.name, "credential": credential}


class HeartbeatIn(BaseModel):
    version: str = Field(default="", max_length=32)
    hostname: str = Field(default="", max_length=255)
    inventory: dict[str, Any] = Field(default_factory=dict)


@router.post("/heartbeat", summary="The agent is alive; what it sees of Exchange")
def heartbeat(body: HeartbeatIn, request: Request) -> dict[str, Any]:
    who = _agent(request, touch=True)
    with runtime(request).db.session() as session:
        agent = session.get(Agent, who.agent_id)
        agent.version = body.version
        agent.hostname = body.hostname or agent.hostname
        agent.inventory = body.inventory
    return {"ok": True}


def _task_doc(task: AgentTask) -> dict[str, Any]:
    return {"id": task.id, "kind": task.kind, "state": task.state, "params": task.params}


@router.get("/work", summary="Long poll for the next task (204 when none came)")
def work(request: Request, wait: float = Query(default=p.POLL_WAIT_S, ge=0, le=60)):
    who = _agent(request, touch=True)
    db = runtime(request).db
    import time

    deadline = time.monotonic() + wait
    while True:
        with db.session() as session:
            agent = session.get(Agent, who.agent_id)
            svc.seen(session, agent)
            task = svc.claim_next(session, agent)
            if task is not None:
                return _task_doc(task)
        if time.monotonic() >= deadline:
            return Response(status_code=204)
        time.sleep(0.25)


@router.get("/tasks/{task_id}", summary="A task's state, long-polled until it changes")
def task_state(
    task_id: int,
    request: Request,
    wait: float = Query(default=0, ge=0, le=60),
    unless: str | None = Query(default=None, max_length=16),
):
    who = _agent(request)
    db = runtime(request).db
    with db.session() as session:
        svc.task_of(session, session.get(Agent, who.agent_id), task_id)
    task = svc.wait_for(
        db.session, task_id, lambda t: unless is None or t.state != unless, timeout=wait
    )
    return {"id": task.id, "state": task.state, "error": task.error}


class ProgressIn(BaseModel):
    bytes_done: int = Field(ge=0)
    bytes_sent: int | None = Field(default=None, ge=0)
    message: str = Field(default="", max_length=500)


def _own(session, who: _Who, task_id: int) -> AgentTask:
    try:
        return svc.task_of(session, session.get(Agent, who.agent_id), task_id)
    except svc.AgentProblem as exc:
        raise _problem(exc) from None


@router.post("/tasks/{task_id}/progress", summary="Progress; the answer says whether to cancel")
def progress(task_id: int, body: ProgressIn, request: Request) -> dict[str, Any]:
    who = _agent(request, touch=True)
    with runtime(request).db.session() as session:
        task = _own(session, who, task_id)
        from app.db.types import utcnow

        task.heartbeat_at = utcnow()
        task.bytes_done = body.bytes_done
        if body.bytes_sent is not None:
            task.bytes_sent = body.bytes_sent
        if body.message:
            task.report = {**task.report, "message": body.message}
        return {"state": task.state, "cancel": task.state in (p.CANCELLED, p.FAILED)}


# -- chunks ---------------------------------------------------------------------------------

_repos: dict[int, Repository] = {}
_repos_lock = threading.Lock()


def _repository(request: Request, session, connection_id: int) -> Repository:
    with _repos_lock:
        repo = _repos.get(connection_id)
        if repo is None:
            try:
                repo = open_repository(
                    session, connection_id, root_key=runtime(request).settings.root_key()
                )
            except RepositoryError as exc:
                raise Problem(409, str(exc)) from None
            _repos[connection_id] = repo
        return repo


def _running_backup(session, who: _Who, task_id: int) -> AgentTask:
    task = _own(session, who, task_id)
    if task.kind != "backup" or task.state != p.RUNNING:
        raise Problem(409, f"task {task_id} is {task.state}: it takes no chunks now")
    return task


class DigestsIn(BaseModel):
    digests: list[str] = Field(max_length=256)


@router.post("/tasks/{task_id}/missing", summary="Which of these chunks the repository lacks")
def missing(task_id: int, body: DigestsIn, request: Request) -> dict[str, Any]:
    who = _agent(request)
    with runtime(request).db.session() as session:
        task = _running_backup(session, who, task_id)
        repo = _repository(request, session, task.params["repository_id"])
    for d in body.digests:
        _check_digest(d)
    return {"missing": sorted(repo.missing_chunks(body.digests))}


def _check_digest(digest: str) -> None:
    if len(digest) != DIGEST_LENGTH or any(c not in "0123456789abcdef" for c in digest):
        raise Problem(422, f"'{digest[:80]}' is not a chunk digest")


@router.put("/tasks/{task_id}/chunks/{digest}", status_code=201, summary="Store one chunk")
async def put_chunk(task_id: int, digest: str, request: Request) -> Response:
    who = await run_in_threadpool(_agent, request)  # who asks first, then what they ask
    _check_digest(digest)

    def _prepare():
        with runtime(request).db.session() as session:
            task = _running_backup(session, who, task_id)
            return _repository(request, session, task.params["repository_id"]), task.params

    repo, params = await run_in_threadpool(_prepare)
    data = await request.body()
    if len(data) > int(params["block_size"]):
        raise Problem(413, f"a chunk is at most {params['block_size']} bytes")

    def _store():
        if repo.digest(data) != digest:
            raise Problem(422, "the chunk's content does not match its digest")
        repo.put_chunk(data, durable=False)

    await run_in_threadpool(_store)
    return Response(status_code=201)


@router.get("/tasks/{task_id}/chunks/{digest}", summary="Read one chunk of a restore")
def get_chunk(task_id: int, digest: str, request: Request) -> Response:
    who = _agent(request)  # who asks first, then what they ask
    _check_digest(digest)
    with runtime(request).db.session() as session:
        task = _own(session, who, task_id)
        if task.kind != "restore" or task.state != p.RUNNING:
            raise Problem(409, f"task {task_id} is {task.state}: it reads no chunks now")
        # Only chunks of the restore points this task restores.
        if not any(digest in g["blocks"] for g in task.params["groups"]):
            raise Problem(404, "this task restores no such chunk")
        repo = _repository(request, session, task.params["repository_id"])
    try:
        data = repo.get_chunk(digest)
    except ChunkDamaged as exc:
        raise Problem(409, str(exc)) from None
    return Response(content=data, media_type="application/octet-stream")


# -- outcomes -------------------------------------------------------------------------------


class CopiedIn(BaseModel):
    groups: list[dict[str, Any]] = Field(max_length=3)
    check: dict[str, Any] = Field(default_factory=dict)
    snapshot: dict[str, Any] = Field(default_factory=dict)
    log_state: dict[str, Any] = Field(default_factory=dict)
    sent_chunks: int = 0
    sent_bytes: int = 0
    reconnects: int = 0


@router.post("/tasks/{task_id}/copied", summary="Every file is in; the check passed")
def copied(task_id: int, body: CopiedIn, request: Request) -> dict[str, Any]:
    who = _agent(request)
    with runtime(request).db.session() as session:
        task = _own(session, who, task_id)
        if task.state == p.COPIED:
            return {"state": task.state}  # a repeated call after a dropped answer
        report = {**task.report, **body.model_dump()}
        if not svc.move(session, task.id, (p.RUNNING,), p.COPIED, report=report):
            raise Problem(409, f"task {task_id} is {task.state}")
    return {"state": p.COPIED}


class FailedIn(BaseModel):
    error: str = Field(max_length=2000)
    what: dict[str, Any] = Field(default_factory=dict)


@router.post("/tasks/{task_id}/failed", summary="The agent could not do the task")
def failed(task_id: int, body: FailedIn, request: Request) -> dict[str, Any]:
    who = _agent(request)
    with runtime(request).db.session() as session:
        task = _own(session, who, task_id)
        svc.move(
            session,
            task.id,
            (p.QUEUED, p.RUNNING, p.COPIED, p.DURABLE),
            p.FAILED,
            error=body.error,
            report={**task.report, "failure": body.what},
        )
    return {"state": p.FAILED}


class DoneIn(BaseModel):
    truncation: dict[str, Any] | None = None
    result: dict[str, Any] | None = None


@router.post("/tasks/{task_id}/done", summary="The task is finished")
def done(task_id: int, body: DoneIn, request: Request) -> dict[str, Any]:
    who = _agent(request)
    with runtime(request).db.session() as session:
        task = _own(session, who, task_id)
        if task.state == p.DONE:
            return {"state": p.DONE}
        allowed = (p.DURABLE,) if task.kind == "backup" else (p.RUNNING,)
        extra = {k: v for k, v in body.model_dump().items() if v is not None}
        if not svc.move(session, task.id, allowed, p.DONE, report={**task.report, **extra}):
            raise Problem(409, f"task {task_id} is {task.state}, it cannot be done now")
    return {"state": p.DONE}


# -- operators: enroll an agent, see it, revoke it ---------------------------------------------


class AgentOut(BaseModel):
    server_id: int
    enrolled: bool
    online: bool
    version: str | None = None
    hostname: str | None = None
    last_seen_at: datetime | None = None
    databases: list[dict[str, Any]] = Field(default_factory=list)


def agent_status(session, server_id: int) -> AgentOut:
    agent = svc.agent_of(session, server_id)
    if agent is None or agent.revoked_at is not None:
        return AgentOut(server_id=server_id, enrolled=False, online=False)
    return AgentOut(
        server_id=server_id,
        enrolled=True,
        online=svc.is_online(agent),
        version=agent.version,
        hostname=agent.hostname,
        last_seen_at=agent.last_seen_at,
        databases=(agent.inventory or {}).get("databases", []),
    )


@admin.get("/{server_id}/agent", response_model=AgentOut, summary="The server's agent")
def read_agent(server_id: int, session: DbSession, _: Reader):
    if session.get(ExchangeServer, server_id) is None:
        raise not_found("Exchange server", server_id)
    return agent_status(session, server_id)


class EnrollmentOut(BaseModel):
    code: str
    expires_at: datetime
    fingerprint: str | None
    command: str


def new_enrollment(request: Request, session, server_id: int, principal) -> EnrollmentOut:
    server = session.get(ExchangeServer, server_id)
    if server is None:
        raise not_found("Exchange server", server_id)
    code = svc.create_enrollment(session, server, principal.actor.name)
    settings = runtime(request).settings
    cert = settings.tls_cert_path()
    fp = fingerprint(cert) if cert else None
    base = str(request.base_url).rstrip("/").replace("http://", "https://", 1)
    command = f"bulwark agent enroll --url {base} --code {code}" + (
        f" --fingerprint {fp}" if fp else ""
    )
    record(session, principal.actor, "agent.enrollment.create", "server", server.id)
    expires = session.scalar(
        select(svc.AgentEnrollment.expires_at)
        .where(svc.AgentEnrollment.server_id == server.id)
        .order_by(svc.AgentEnrollment.id.desc())
        .limit(1)
    )
    return EnrollmentOut(code=code, expires_at=expires, fingerprint=fp, command=command)


@admin.post(
    "/{server_id}/agent/enrollments",
    response_model=EnrollmentOut,
    status_code=201,
    summary="A one-time code to enroll this server's agent (valid one hour)",
)
def create_enrollment(server_id: int, request: Request, session: DbSession, principal=Admin):
    return new_enrollment(request, session, server_id, principal)


@admin.delete("/{server_id}/agent", status_code=204, summary="Revoke the server's agent")
def revoke_agent(server_id: int, session: DbSession, principal=Admin):
    agent = svc.agent_of(session, server_id)
    if agent is None:
        raise not_found("agent of server", server_id)
    from app.db.types import utcnow

    agent.revoked_at = utcnow()
    record(session, principal.actor, "agent.revoke", "server", server_id)
    return Response(status_code=204)
