"""Storage-array volumes as last listed, so RDM LUNs can be matched to them by NAA id and the
backup of a database on a physical-mode RDM finds its array without asking every array."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.db.types import UTCDateTime, utcnow


class ArrayVolume(Base):
    __tablename__ = "array_volumes"
    __table_args__ = (UniqueConstraint("connection_id", "naa_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), index=True
    )
    # naa.6001405… in lower case: what vCenter shows as the RDM's LUN.
    naa_id: Mapped[str] = mapped_column(String(64), index=True)
    consistency_group: Mapped[str] = mapped_column(String(128), default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # A clone made by a restore: the snapshot it came from.
    clone_of: Mapped[str | None] = mapped_column(String(255))
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
