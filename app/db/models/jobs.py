"""Jobs are rows: workers claim them with a lease and write progress and events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base
from app.db.types import StrEnumType, UTCDateTime, utcnow
from app.domain.jobs import EventLevel, JobKind, JobState


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_not_before", "state", "not_before"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[JobKind] = mapped_column(StrEnumType(JobKind), index=True)
    state: Mapped[JobState] = mapped_column(StrEnumType(JobState), default=JobState.QUEUED)
    policy_id: Mapped[int | None] = mapped_column(
        ForeignKey("policies.id", ondelete="SET NULL"), index=True
    )
    server_id: Mapped[int | None] = mapped_column(
        ForeignKey("exchange_servers.id", ondelete="SET NULL"), index=True
    )
    database_id: Mapped[int | None] = mapped_column(
        ForeignKey("exchange_databases.id", ondelete="SET NULL")
    )
    # The job that queued this one (a policy-wide run queues one job per target).
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    # Kind-specific input: for a restore, the restore point and destination.
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    required_capabilities: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Outside resources the job loads ("datastore:ds-1", "host:host-9"), for the engine's
    # per-resource limits; said by the kind's handler when the job is made (enqueue).
    resources: Mapped[list[str]] = mapped_column(JSON, default=list)
    progress_percent: Mapped[float] = mapped_column(default=0.0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int | None] = mapped_column(BigInteger)
    current_step: Mapped[str] = mapped_column(String(64), default="")
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    worker_name: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Things created in the outside world (snapshot morefs, temp files) so a crash can be
    # cleaned up by whoever takes the job over.
    leftovers: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    # What the handler reported on success: its message and details (the restore point made,
    # the snapshots expired, the jobs queued…).
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(64), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    events: Mapped[list[JobEvent]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="JobEvent.id"
    )


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    level: Mapped[EventLevel] = mapped_column(StrEnumType(EventLevel), default=EventLevel.INFO)
    step: Mapped[str] = mapped_column(String(64), default="")
    message: Mapped[str] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="events")


class Proxy(Base):
    """A worker process and what it can reach; jobs go only to proxies that can do them."""

    __tablename__ = "proxies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    hostname: Mapped[str] = mapped_column(String(255), default="")
    capabilities: Mapped[list[str]] = mapped_column(JSON, default=list)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
