from __future__ import annotations

from datetime import datetime
from typing import Any

from app.api.schemas.common import Output


class DiskOut(Output):
    device_key: int
    label: str
    backing: str
    disk_mode: str
    capacity_bytes: int
    datastore_moref: str | None
    file_name: str
    lun_uuid: str | None
    device_name: str | None


class VmOut(Output):
    id: int
    connection_id: int
    moref: str
    name: str
    instance_uuid: str | None
    host_moref: str | None
    power_state: str
    tools_status: str
    guest_os: str
    cbt_enabled: bool
    snapshot_names: list[str]
    custom_attributes: dict[str, Any]
    synced_at: datetime
    disks: list[DiskOut]


class DatastoreOut(Output):
    id: int
    connection_id: int
    moref: str
    name: str
    type: str
    capacity_bytes: int
    free_bytes: int
    synced_at: datetime


class HostOut(Output):
    id: int
    connection_id: int
    moref: str
    name: str
    cluster_moref: str | None
    connection_state: str


class ConnectionTestOut(Output):
    ok: bool
    message: str
    about: str | None = None
    presented_thumbprint: str | None = None


class SyncOut(Output):
    datacenters: int
    clusters: int
    hosts: int
    datastores: int
    vms: int
    disks: int
    servers_discovered: list[str]
    databases_mapped: int
    problems: list[str]
    copies_gone: list[str] = []
