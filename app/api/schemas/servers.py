from __future__ import annotations

from datetime import datetime

from pydantic import Field

from app.api.schemas.common import Input, LongText, Name, Output, Patch
from app.domain.protection import DatabaseLayout

DiskKey = int


class DatabaseIn(Input):
    name: Name
    database_disk_key: DiskKey | None = Field(default=None, ge=0)
    log_disk_key: DiskKey | None = Field(default=None, ge=0)
    layout: DatabaseLayout | None = Field(
        default=None,
        description="Follows from the database disk's backing when the VM is in the inventory",
    )


class DatabaseUpdate(Patch):
    nullable = frozenset({"database_disk_key", "log_disk_key"})

    name: Name | None = None
    database_disk_key: DiskKey | None = Field(default=None, ge=0)
    log_disk_key: DiskKey | None = Field(default=None, ge=0)
    layout: DatabaseLayout | None = None


class DatabaseOut(Output):
    id: int
    server_id: int
    name: str
    database_disk_key: int | None
    log_disk_key: int | None
    layout: DatabaseLayout


class ServerCreate(Input):
    name: Name
    connection_id: int | None = Field(default=None, description="The vCenter holding the VM")
    vm_moref: str | None = Field(default=None, max_length=64, pattern=r"^[\w-]+$")
    description: LongText = ""
    databases: list[DatabaseIn] = Field(default_factory=list, max_length=100)


class ServerUpdate(Patch):
    nullable = frozenset({"connection_id", "vm_moref"})

    name: Name | None = None
    connection_id: int | None = None
    vm_moref: str | None = Field(default=None, max_length=64, pattern=r"^[\w-]+$")
    description: LongText | None = None


class ServerOut(Output):
    id: int
    name: str
    connection_id: int | None
    vm_moref: str | None
    description: str
    databases: list[DatabaseOut]
    created_at: datetime
    updated_at: datetime


class ConsistencyOption(Output):
    consistency: str
    needs: list[str]


class MethodAdvice(Output):
    method: str
    title: str
    applies: bool
    reason: str
    consistency: list[ConsistencyOption]
    restores: list[str]
    restores_from_primary: list[str]
    warnings: list[str] = []


class DatabaseAdvice(Output):
    database_id: int | None
    name: str
    layout: DatabaseLayout
    options: list[MethodAdvice]


class ServerAdvice(Output):
    server_id: int
    server: str
    application: list[MethodAdvice]
    databases: list[DatabaseAdvice]
