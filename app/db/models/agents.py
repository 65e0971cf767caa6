"""In-guest agents: one-time enrollment codes, the agent bound to one server, and its tasks.

An agent's credential is stored hashed, like an API token; it authenticates only the agent's
own routes (``/api/v1/agent``), never the operators' API or the dashboard.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.db.types import UTCDateTime, utcnow


class AgentEnrollment(Base):
    """A one-time code an admin created for one server; used once or expired."""

    __tablename__ = "agent_enrollments"

    id: Mapped[int] = mapped_column(primary_key=True)
    server_id: Mapped[int] = mapped_column(
        ForeignKey("exchange_servers.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(64), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Agent(Base):
    """The agent enrolled on one server (a new enrollment replaces the old credential)."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    server_id: Mapped[int] = mapped_column(
        ForeignKey("exchange_servers.id", ondelete="CASCADE"), unique=True
    )
    credential_hash: Mapped[str] = mapped_column(String(64), unique=True)
    version: Mapped[str] = mapped_column(String(32), default="")
    hostname: Mapped[str] = mapped_column(String(255), default="")
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What the agent last reported: its Exchange databases, their copies (DAG) and log disks.
    inventory: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AgentTask(Base):
    """One piece of work for an agent, created by a job and pulled by the agent.

    ``state`` moves queued → running → copied (files in the repository, check passed) →
    durable (restore point cataloged: the agent may truncate) → done; or failed/cancelled.
    """

    __tablename__ = "agent_tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    server_id: Mapped[int] = mapped_column(
        ForeignKey("exchange_servers.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the agent reported (files and their blocks, check results, truncation).
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(String(2000))
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
