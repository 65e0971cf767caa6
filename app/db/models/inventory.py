"""The vSphere estate as last synchronised, so pages load without calling vCenter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base
from app.db.types import UTCDateTime, utcnow


class InventoryObject:
    """Columns shared by everything read from vCenter: which vCenter, which moref."""

    id: Mapped[int] = mapped_column(primary_key=True)
    moref: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255), index=True)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Datacenter(InventoryObject, Base):
    __tablename__ = "datacenters"
    __table_args__ = (UniqueConstraint("connection_id", "moref"),)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))


class Cluster(InventoryObject, Base):
    __tablename__ = "clusters"
    __table_args__ = (UniqueConstraint("connection_id", "moref"),)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    datacenter_moref: Mapped[str | None] = mapped_column(String(64))


class Host(InventoryObject, Base):
    __tablename__ = "hosts"
    __table_args__ = (UniqueConstraint("connection_id", "moref"),)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    cluster_moref: Mapped[str | None] = mapped_column(String(64))
    connection_state: Mapped[str] = mapped_column(String(32), default="")


class Datastore(InventoryObject, Base):
    __tablename__ = "datastores"
    __table_args__ = (UniqueConstraint("connection_id", "moref"),)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32), default="")
    capacity_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    free_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class VirtualMachine(InventoryObject, Base):
    __tablename__ = "virtual_machines"
    __table_args__ = (UniqueConstraint("connection_id", "moref"),)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), index=True
    )
    instance_uuid: Mapped[str | None] = mapped_column(String(64))
    host_moref: Mapped[str | None] = mapped_column(String(64))
    power_state: Mapped[str] = mapped_column(String(32), default="")
    tools_status: Mapped[str] = mapped_column(String(32), default="")
    guest_os: Mapped[str] = mapped_column(String(128), default="")
    cbt_enabled: Mapped[bool] = mapped_column(default=False)
    snapshot_names: Mapped[list[str]] = mapped_column(JSON, default=list)
    custom_attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    disks: Mapped[list[VirtualDisk]] = relationship(
        back_populates="vm", cascade="all, delete-orphan", order_by="VirtualDisk.device_key"
    )


class VirtualDisk(Base):
    """One disk of a VM with its backing: the backing decides the database layout."""

    __tablename__ = "virtual_disks"
    __table_args__ = (UniqueConstraint("vm_id", "device_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("virtual_machines.id", ondelete="CASCADE"))
    device_key: Mapped[int]
    label: Mapped[str] = mapped_column(String(128), default="")
    backing: Mapped[str] = mapped_column(String(32))  # flat | rdm-physical | rdm-virtual | other
    disk_mode: Mapped[str] = mapped_column(String(64), default="persistent")
    capacity_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    datastore_moref: Mapped[str | None] = mapped_column(String(64))
    file_name: Mapped[str] = mapped_column(String(512), default="")
    lun_uuid: Mapped[str | None] = mapped_column(String(128))
    device_name: Mapped[str | None] = mapped_column(String(255))

    vm: Mapped[VirtualMachine] = relationship(back_populates="disks")
