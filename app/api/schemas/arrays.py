from __future__ import annotations

from datetime import datetime

from app.api.schemas.common import Output


class ArrayVolumeOut(Output):
    naa_id: str
    consistency_group: str
    size_bytes: int
    used_bytes: int
    clone_of: str | None
    synced_at: datetime


class ArrayVolumesOut(Output):
    connection_id: int
    volumes: list[ArrayVolumeOut]


class ArraySnapshotOut(Output):
    id: str
    group: str
    name: str
    created_at: datetime
    size_bytes: int
    volumes: list[str]


class ArrayCapabilitiesOut(Output):
    driver: str
    consistency_groups: bool
    clone: bool
    revert: bool
    changed_blocks: bool
    read_snapshots: bool
    total_bytes: int
    used_bytes: int
    free_bytes: int


class LunMatchOut(Output):
    vm_name: str
    vm_moref: str
    connection_id: int
    device_key: int
    label: str
    backing: str
    capacity_bytes: int
    naa_id: str | None
    server: str | None
    databases: list[str]
    role: str | None
    matched: bool
    array_connection_id: int | None
    array_name: str | None
    consistency_group: str | None
