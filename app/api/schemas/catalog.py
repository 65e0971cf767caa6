from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from app.api.schemas.common import Input, LongText, Output, Patch
from app.domain.protection import (
    Consistency,
    CopyLocation,
    ProtectionMethod,
    RestorePointStatus,
    Verification,
)


class CopyOut(Output):
    id: int
    location: CopyLocation
    connection_id: int | None
    reference: str
    size_bytes: int
    created_at: datetime
    removed_at: datetime | None
    # Found missing where it lived (deleted outside Bulwark): when, and how it was found.
    gone_at: datetime | None = None
    gone_reason: str | None = None
    # An immutable repository's copy: nobody can delete it before then.
    immutable_until: datetime | None = None


class RestorePointOut(Output):
    id: int
    policy_id: int | None
    server_id: int | None
    database_id: int | None
    job_id: int | None
    captured_at: datetime
    method: ProtectionMethod
    consistency: Consistency
    capabilities: list[str]
    size_bytes: int
    status: RestorePointStatus
    verification: Verification
    verified_at: datetime | None
    expires_at: datetime | None
    retain_until: datetime | None
    on_hold: bool = False
    # The latest lock end of its copies in immutable repositories (None: none is locked).
    immutable_until: datetime | None = None
    # Snapshot name, quiesce window in seconds, the consistency asked for, script exit codes.
    details: dict[str, Any]
    copies: list[CopyOut]


class RestorePointUpdate(Patch):
    nullable = frozenset({"expires_at"})

    expires_at: datetime | None = Field(description="Keep until then (or null: retention decides)")


HoldScope = Literal["server", "restore_point", "mailbox", "search"]


class LegalHoldCreate(Input):
    name: str = Field(min_length=1, max_length=128)
    reason: LongText = Field(min_length=1)
    scope: HoldScope
    server_id: int | None = None
    restore_point_id: int | None = None
    mailbox: str | None = Field(default=None, max_length=255)
    search_query: str | None = Field(default=None, max_length=4000)

    @model_validator(mode="after")
    def _scope_has_its_subject(self):
        needed = {
            "server": "server_id",
            "restore_point": "restore_point_id",
            "mailbox": "mailbox",
            "search": "search_query",
        }[self.scope]
        if getattr(self, needed) in (None, ""):
            raise ValueError(f"a {self.scope} hold needs {needed}")
        return self


class LegalHoldOut(Output):
    id: int
    name: str
    reason: str
    scope: str
    server_id: int | None
    restore_point_id: int | None
    mailbox: str | None
    search_query: str | None
    created_by: str
    created_at: datetime
    released_at: datetime | None
    released_by: str | None


class AuditEventOut(Output):
    id: int
    at: datetime
    actor: str
    actor_kind: str
    action: str
    object_type: str
    object_id: str | None
    outcome: str
    client_ip: str | None
    detail: dict[str, Any]
