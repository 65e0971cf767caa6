"""The restore-point catalog: what was captured, where its copies live, what it restores."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ColumnElement, ForeignKey, String, Text
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base
from app.db.types import StrEnumType, UTCDateTime, utcnow
from app.domain.protection import (
    Consistency,
    CopyLocation,
    ProtectionMethod,
    RestorePointStatus,
    Verification,
)


class RestorePoint(Base):
    __tablename__ = "restore_points"

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_id: Mapped[int | None] = mapped_column(
        ForeignKey("policies.id", ondelete="SET NULL"), index=True
    )
    server_id: Mapped[int | None] = mapped_column(
        ForeignKey("exchange_servers.id", ondelete="SET NULL"), index=True
    )
    database_id: Mapped[int | None] = mapped_column(
        ForeignKey("exchange_databases.id", ondelete="SET NULL")
    )
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    # The moment the data represents (the snapshot time), not when copying finished.
    captured_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    method: Mapped[ProtectionMethod] = mapped_column(StrEnumType(ProtectionMethod))
    consistency: Mapped[Consistency] = mapped_column(StrEnumType(Consistency))
    capabilities: Mapped[list[str]] = mapped_column(JSON, default=list)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[RestorePointStatus] = mapped_column(
        StrEnumType(RestorePointStatus), default=RestorePointStatus.AVAILABLE
    )
    verification: Mapped[Verification] = mapped_column(
        StrEnumType(Verification), default=Verification.UNVERIFIED
    )
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Compliance retention: nothing may remove this restore point before this moment.
    retain_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    copies: Mapped[list[RestorePointCopy]] = relationship(
        back_populates="restore_point", cascade="all, delete-orphan", lazy="selectin"
    )

    # The catalog's one rule for a copy that still exists: not removed (by retention,
    # expiry or a verify that found it gone). In SQL: RestorePointCopy.live.
    def live_copies(self, location: CopyLocation | None = None) -> list[RestorePointCopy]:
        """The copies not removed, at ``location`` or anywhere."""
        return [
            c
            for c in self.copies
            if c.removed_at is None and (location is None or c.location == location)
        ]

    def live_copy(
        self, location: CopyLocation, connection_id: int | None = None
    ) -> RestorePointCopy | None:
        """The copy at ``location`` (on that connection, if given) not removed, or None."""
        return next(
            (
                c
                for c in self.live_copies(location)
                if connection_id is None or c.connection_id == connection_id
            ),
            None,
        )


class RestorePointCopy(Base):
    __tablename__ = "restore_point_copies"

    id: Mapped[int] = mapped_column(primary_key=True)
    restore_point_id: Mapped[int] = mapped_column(
        ForeignKey("restore_points.id", ondelete="CASCADE"), index=True
    )
    location: Mapped[CopyLocation] = mapped_column(StrEnumType(CopyLocation))
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="SET NULL")
    )
    # Snapshot moref, array snapshot name or repository manifest id.
    reference: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Found missing where it lived (a snapshot deleted outside Bulwark): when, and how it was
    # found. A gone copy is also removed (``removed_at``), so nothing offers it any more.
    gone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    gone_reason: Mapped[str | None] = mapped_column(Text)

    restore_point: Mapped[RestorePoint] = relationship(back_populates="copies")

    @hybrid_property
    def live(self) -> bool:
        """Not removed (see RestorePoint.live_copies); a SQL condition on the class."""
        return self.removed_at is None

    @live.inplace.expression
    @classmethod
    def _live_expression(cls) -> ColumnElement[bool]:
        return cls.removed_at.is_(None)


class LegalHold(Base):
    """Blocks every expiry of what it covers until released."""

    __tablename__ = "legal_holds"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    reason: Mapped[str] = mapped_column(Text)
    # What it covers: a server, a restore point, a mailbox or a saved archive search.
    scope: Mapped[str] = mapped_column(String(32))
    server_id: Mapped[int | None] = mapped_column(
        ForeignKey("exchange_servers.id", ondelete="RESTRICT")
    )
    restore_point_id: Mapped[int | None] = mapped_column(
        ForeignKey("restore_points.id", ondelete="RESTRICT")
    )
    mailbox: Mapped[str | None] = mapped_column(String(255))
    search_query: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    released_by: Mapped[str | None] = mapped_column(String(64))
