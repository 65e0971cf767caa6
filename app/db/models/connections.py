"""Connections to outside systems: vCenter, storage arrays, repositories, mail servers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, Timestamped
from app.db.types import StrEnumType, UTCDateTime
from app.domain.connections import ConnectionKind, ConnectionStatus


class Connection(Timestamped, Base):
    __tablename__ = "connections"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[ConnectionKind] = mapped_column(StrEnumType(ConnectionKind), index=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    port: Mapped[int | None]
    username: Mapped[str] = mapped_column(String(128), default="")
    # Nonce + AES-GCM ciphertext of the password/key; never leaves the service in clear.
    secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    # vCenter only: the guest account VMware Tools runs pre/post-snapshot scripts as.
    guest_username: Mapped[str] = mapped_column(String(128), default="")
    guest_secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    verify_tls: Mapped[bool] = mapped_column(default=True)
    # SHA-256 of a certificate an admin chose to trust explicitly (audited).
    trusted_thumbprint: Mapped[str | None] = mapped_column(String(95))
    # Kind-specific settings that are not secret: array driver, repository path, mailboxes…
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[ConnectionStatus] = mapped_column(
        StrEnumType(ConnectionStatus), default=ConnectionStatus.UNTESTED
    )
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)

    @property
    def has_secret(self) -> bool:
        return self.secret_ciphertext is not None

    @property
    def has_guest_secret(self) -> bool:
        return self.guest_secret_ciphertext is not None
