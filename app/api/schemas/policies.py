from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, EmailStr, Field, SecretStr, field_validator, model_validator

from app.api.schemas.common import Input, LongText, Name, Output, Patch
from app.domain.protection import Consistency, ProtectionMethod, RestoreCapability
from app.domain.schedules import schedule_problem

NotifyOn = Literal["failure", "rpo_breach"]
TruncateLogs = Literal["require", "try", "off"]
DagSource = Literal["passive_first", "passive", "active"]
ServerName = Annotated[str, Field(min_length=1, max_length=64)]
WebhookSecret = Annotated[SecretStr, Field(min_length=16, max_length=256)]


class TargetIn(Input):
    server_id: int
    database_id: int | None = Field(default=None, description="Omit to protect the whole server")


class TargetOut(Output):
    server_id: int
    database_id: int | None


def _check_cron(value: str | None) -> str | None:
    problem = schedule_problem(value) if value is not None else None
    if problem:
        raise ValueError(problem)
    return value


class PolicyFields(Input):
    description: LongText = ""
    enabled: bool = True
    schedule_cron: str | None = Field(default=None, max_length=128, examples=["0 */4 * * *"])
    rpo_minutes: int | None = Field(default=None, ge=5, le=7 * 24 * 60)
    pre_script: str | None = Field(default=None, max_length=4000)
    post_script: str | None = Field(default=None, max_length=4000)
    script_timeout_s: int = Field(default=20, ge=1, le=600)
    keep_on_primary: int = Field(default=0, ge=0, le=64)
    repository_id: int | None = None
    keep_last: int = Field(default=7, ge=0, le=10000)
    keep_daily: int = Field(default=0, ge=0, le=3660)
    keep_weekly: int = Field(default=0, ge=0, le=520)
    keep_monthly: int = Field(default=0, ge=0, le=1200)
    keep_yearly: int = Field(default=0, ge=0, le=100)
    compliance_retention_days: int | None = Field(default=None, ge=1, le=36500)
    restores_needed: list[RestoreCapability] = Field(
        default_factory=list, description="Restores that must be possible; checked per target"
    )
    notify_on: list[NotifyOn] = Field(default_factory=lambda: ["failure", "rpo_breach"])
    notify_webhook_url: AnyHttpUrl | None = None
    notify_webhook_secret: WebhookSecret | None = Field(
        default=None, description="Write-only; signs webhook bodies (X-Bulwark-Signature)"
    )
    notify_emails: list[EmailStr] = Field(default_factory=list, max_length=20)
    truncate_logs: TruncateLogs = Field(
        default="off",
        description="Exchange log truncation after a successful backup, for snapshot and "
        "image methods (the agent stream always truncates once the point is safe)",
    )
    dag_source: DagSource = Field(
        default="passive_first",
        description="Which copy of a DAG database to back up: a healthy passive copy, falling "
        "back to the active one; passive only; or active only",
    )
    dag_preferred: list[ServerName] = Field(
        default_factory=list, max_length=16, description="DAG members to prefer, in order"
    )

    @field_validator("schedule_cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return _check_cron(value)


class PolicyCreate(PolicyFields):
    name: Name
    method: ProtectionMethod
    consistency: Consistency
    targets: list[TargetIn] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _one_schedule(self):
        if (self.schedule_cron is None) == (self.rpo_minutes is None):
            raise ValueError("give exactly one of schedule_cron or rpo_minutes")
        return self


class PolicyUpdate(Patch):
    nullable = frozenset(
        {
            "compliance_retention_days",
            "notify_webhook_secret",
            "notify_webhook_url",
            "post_script",
            "pre_script",
            "repository_id",
            "rpo_minutes",
            "schedule_cron",
            "targets",
        }
    )

    name: Name | None = None
    description: LongText | None = None
    enabled: bool | None = None
    method: ProtectionMethod | None = None
    consistency: Consistency | None = None
    schedule_cron: str | None = Field(default=None, max_length=128)
    rpo_minutes: int | None = Field(default=None, ge=5, le=7 * 24 * 60)
    pre_script: str | None = Field(default=None, max_length=4000)
    post_script: str | None = Field(default=None, max_length=4000)
    script_timeout_s: int | None = Field(default=None, ge=1, le=600)
    keep_on_primary: int | None = Field(default=None, ge=0, le=64)
    repository_id: int | None = None
    keep_last: int | None = Field(default=None, ge=0, le=10000)
    keep_daily: int | None = Field(default=None, ge=0, le=3660)
    keep_weekly: int | None = Field(default=None, ge=0, le=520)
    keep_monthly: int | None = Field(default=None, ge=0, le=1200)
    keep_yearly: int | None = Field(default=None, ge=0, le=100)
    compliance_retention_days: int | None = Field(default=None, ge=1, le=36500)
    restores_needed: list[RestoreCapability] | None = None
    notify_on: list[NotifyOn] | None = None
    notify_webhook_url: AnyHttpUrl | None = None
    notify_webhook_secret: WebhookSecret | None = Field(default=None, description="Write-only")
    notify_emails: list[EmailStr] | None = Field(default=None, max_length=20)
    truncate_logs: TruncateLogs | None = None
    dag_source: DagSource | None = None
    dag_preferred: list[ServerName] | None = Field(default=None, max_length=16)
    targets: list[TargetIn] | None = Field(default=None, max_length=1000)

    @field_validator("schedule_cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return _check_cron(value)


class PolicyOut(Output):
    id: int
    name: str
    description: str
    enabled: bool
    method: ProtectionMethod
    consistency: Consistency
    schedule_cron: str | None
    rpo_minutes: int | None
    pre_script: str | None
    post_script: str | None
    script_timeout_s: int
    keep_on_primary: int
    repository_id: int | None
    keep_last: int
    keep_daily: int
    keep_weekly: int
    keep_monthly: int
    keep_yearly: int
    compliance_retention_days: int | None
    restores_needed: list[RestoreCapability]
    notify_on: list[str]
    notify_webhook_url: str | None
    has_webhook_secret: bool
    notify_emails: list[str]
    truncate_logs: str
    dag_source: str
    dag_preferred: list[str]
    targets: list[TargetOut]
    created_at: datetime
    updated_at: datetime
