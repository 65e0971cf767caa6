from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from app.api.schemas.common import Input, Output
from app.domain.jobs import EventLevel, JobKind, JobState


class JobCreate(Input):
    """Start a job now. Backups and verifies name a policy; restores name a restore point."""

    kind: Literal[JobKind.BACKUP, JobKind.VERIFY, JobKind.SYNC, JobKind.RESTORE, JobKind.EXPIRE]
    policy_id: int | None = None
    server_id: int | None = None
    database_id: int | None = None
    connection_id: int | None = Field(default=None, description="For sync: the vCenter")
    restore_point_id: int | None = Field(default=None, description="For restore and verify")
    params: dict[str, str | int | bool | list[str]] = Field(default_factory=dict, max_length=32)


class JobEventOut(Output):
    id: int
    at: datetime
    level: EventLevel
    step: str
    message: str


class JobOut(Output):
    id: int
    kind: JobKind
    state: JobState
    policy_id: int | None
    server_id: int | None
    database_id: int | None
    parent_id: int | None = Field(description="The job that queued this one")
    params: dict[str, Any]
    required_capabilities: list[str]
    progress_percent: float
    bytes_done: int
    bytes_total: int | None
    current_step: str
    attempts: int
    max_attempts: int
    worker_name: str | None
    cancel_requested: bool
    error: str | None
    result: dict[str, Any] | None = Field(
        description="On success: the handler's message and details (restore point made …)"
    )
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobChild(Output):
    id: int
    kind: JobKind
    state: JobState
    server_id: int | None
    database_id: int | None


class JobDetail(JobOut):
    events: list[JobEventOut]
    children: list[JobChild] = Field(description="The jobs this one queued, oldest first")
    run_state: JobState = Field(
        description="The state of the job with everything it queued: succeeded only when all "
        "of them did, running while any runs"
    )


class ProxyOut(Output):
    id: int
    name: str
    hostname: str
    capabilities: list[str]
    started_at: datetime
    last_heartbeat_at: datetime
