"""What Bulwark last measured of each repository (by garbage collection or on request)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.db.types import UTCDateTime, utcnow


class RepositoryUsage(Base):
    __tablename__ = "repository_usage"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    measured_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    images: Mapped[int] = mapped_column(default=0)
    chunks: Mapped[int] = mapped_column(default=0)
    # Bytes on the repository's disk (compressed, encrypted) vs bytes the images hold.
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    logical_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # The file system (or bucket quota) the repository lives on, measured after each backup.
    capacity_bytes: Mapped[int | None] = mapped_column(BigInteger)
    free_bytes: Mapped[int | None] = mapped_column(BigInteger)
    last_gc_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_gc_removed_chunks: Mapped[int] = mapped_column(default=0)
    last_gc_freed_bytes: Mapped[int] = mapped_column(BigInteger, default=0)

    @property
    def dedup_ratio(self) -> float | None:
        """Logical bytes per stored byte (dedup, zero blocks and compression together)."""
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else None
