from __future__ import annotations

from datetime import datetime

from pydantic import Field

from app.api.schemas.common import Input, Output


class RepositoryUsageOut(Output):
    measured_at: datetime | None = None
    images: int = 0
    chunks: int = 0
    stored_bytes: int = 0
    logical_bytes: int = 0
    dedup_ratio: float | None = Field(
        default=None, description="Logical bytes per stored byte (dedup, zero blocks, zstd)"
    )
    last_gc_at: datetime | None = None
    last_gc_removed_chunks: int = 0
    last_gc_freed_bytes: int = 0


class RepositoryOut(Output):
    id: int
    name: str
    path: str
    encrypted: bool
    status: str
    usage: RepositoryUsageOut | None = None


class VerifyRequest(Input):
    restore_point_id: int | None = Field(
        default=None, description="One restore point; omit for every one in the repository"
    )
    sample: float = Field(default=1.0, gt=0, le=1, description="Share of blocks to re-read")


class CopyRequest(Input):
    target_repository_id: int = Field(description="The repository the copies go to")
    restore_point_id: int | None = Field(
        default=None, description="One restore point; omit for every one the source holds"
    )


class JobQueuedOut(Output):
    job_id: int


class VerifiedRpoOut(Output):
    policy_id: int
    policy: str
    repository_id: int | None = Field(description="Where the policy's off-host copies go")
    rpo_minutes: int | None
    targets: int
    verified_targets: int = Field(description="Targets with at least one verified restore point")
    oldest_newest_verified_at: datetime | None = Field(
        description="Worst target's newest verified restore point"
    )
    verified_rpo_minutes: int | None = Field(
        description="Age of that restore point: the RPO counting only verified restore points"
    )
    breached: bool
    not_verified_yet: bool = Field(
        default=False,
        description="Some target has no verified restore point, but its first verify is not due",
    )
