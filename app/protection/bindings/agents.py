"""In-guest agents on the service's side: enrollment, the agent's credential, its tasks.

An admin creates a one-time code for one server (valid an hour, stored hashed). The agent
trades it, once, for a credential bound to that server (also stored hashed) that
authenticates nothing but the agent's own routes. Jobs hand agents work as ``AgentTask`` rows
the agent pulls; both sides move a task's state forward, never back.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.agent import protocol as p
from app.db.models import Agent, AgentEnrollment, AgentTask, ExchangeServer
from app.db.types import utcnow

CODE_TTL = timedelta(hours=1)


class AgentProblem(Exception):
    """An agent call that cannot be done; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_enrollment(session: Session, server: ExchangeServer, created_by: str) -> str:
    """A new one-time code for ``server`` (earlier unused codes for it stop working)."""
    now = utcnow()
    session.execute(
        update(AgentEnrollment)
        .where(AgentEnrollment.server_id == server.id, AgentEnrollment.used_at.is_(None))
        .values(used_at=now)
    )
    code = "-".join(secrets.token_hex(3).upper() for _ in range(4))
    session.add(
        AgentEnrollment(
            server_id=server.id,
            code_hash=_hash(code.replace("-", "").upper()),
            created_by=created_by,
            expires_at=now + CODE_TTL,
        )
    )
    session.flush()
    return code


def enroll(session: Session, code: str, hostname: str, version: str) -> tuple[Agent, str]:
    """Trade a code for a credential; the server's previous agent credential stops working."""
    row = session.scalar(
        select(AgentEnrollment).where(
            AgentEnrollment.code_hash == _hash(code.replace("-", "").strip().upper())
        )
    )
    now = utcnow()
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise AgentProblem(401, "the enrollment code is unknown, used or expired")
    # Used exactly once, even when two agents race with the same code.
    used = session.execute(
        update(AgentEnrollment)
        .where(AgentEnrollment.id == row.id, AgentEnrollment.used_at.is_(None))
        .values(used_at=now)
    )
    if used.rowcount != 1:
        raise AgentProblem(401, "the enrollment code is unknown, used or expired")
    agent = session.scalar(select(Agent).where(Agent.server_id == row.server_id))
    secret = secrets.token_urlsafe(32)
    if agent is None:
        agent = Agent(server_id=row.server_id, credential_hash="", inventory={})
        session.add(agent)
        session.flush()
    credential = f"{p.CREDENTIAL_PREFIX}{agent.id}_{secret}"
    agent.credential_hash = _hash(credential)
    agent.hostname = hostname[:255]
    agent.version = version[:32]
    agent.enrolled_at = now
    agent.last_seen_at = now
    agent.revoked_at = None
    session.flush()
    return agent, credential


def authenticate(session: Session, credential: str) -> Agent:
    if not credential.startswith(p.CREDENTIAL_PREFIX):
        raise AgentProblem(401, "not an agent credential")
    agent = session.scalar(select(Agent).where(Agent.credential_hash == _hash(credential)))
    if agent is None or agent.revoked_at is not None:
        raise AgentProblem(401, "the agent credential is unknown or revoked")
    return agent


def is_online(agent: Agent | None, now: datetime | None = None) -> bool:
    if agent is None or agent.revoked_at is not None or agent.last_seen_at is None:
        return False
    return (now or utcnow()) - agent.last_seen_at < timedelta(seconds=p.OFFLINE_AFTER_S)


def agent_of(session: Session, server_id: int) -> Agent | None:
    return session.scalar(select(Agent).where(Agent.server_id == server_id))


def seen(session: Session, agent: Agent) -> None:
    agent.last_seen_at = utcnow()


# -- tasks ----------------------------------------------------------------------------------


def create_task(
    session: Session, server_id: int, job_id: int | None, kind: str, params: dict[str, Any]
) -> AgentTask:
    task = AgentTask(server_id=server_id, job_id=job_id, kind=kind, params=params, report={})
    session.add(task)
    session.flush()
    return task


def claim_next(session: Session, agent: Agent) -> AgentTask | None:
    """The oldest queued task of the agent's server, moved to running (once)."""
    task = session.scalar(
        select(AgentTask)
        .where(AgentTask.server_id == agent.server_id, AgentTask.state == p.QUEUED)
        .order_by(AgentTask.id)
        .limit(1)
    )
    if task is None:
        return None
    moved = session.execute(
        update(AgentTask)
        .where(AgentTask.id == task.id, AgentTask.state == p.QUEUED)
        .values(state=p.RUNNING, heartbeat_at=utcnow())
    )
    if moved.rowcount != 1:
        return None
    session.refresh(task)
    return task


def task_of(session: Session, agent: Agent, task_id: int) -> AgentTask:
    """The agent's own task; another server's is 404, as if it did not exist."""
    task = session.get(AgentTask, task_id)
    if task is None or task.server_id != agent.server_id:
        raise AgentProblem(404, f"no task {task_id} for this agent")
    return task


def move(session: Session, task_id: int, from_states: tuple[str, ...], to: str, **values) -> bool:
    """Compare-and-set on the task's state; False when it was not in ``from_states``."""
    done = session.execute(
        update(AgentTask)
        .where(AgentTask.id == task_id, AgentTask.state.in_(from_states))
        .values(state=to, **values)
    )
    return done.rowcount == 1


def wait_for(
    open_session: Callable[[], Any],
    task_id: int,
    until: Callable[[AgentTask], bool],
    *,
    timeout: float,
    interval: float = 0.2,
) -> AgentTask | None:
    """Poll the task until ``until(task)`` or the timeout; returns the last row read."""
    deadline = time.monotonic() + timeout
    while True:
        with open_session() as session:
            task = session.get(AgentTask, task_id)
            if task is None:
                return None
            session.expunge(task)
        if until(task) or time.monotonic() >= deadline:
            return task
        time.sleep(interval)
