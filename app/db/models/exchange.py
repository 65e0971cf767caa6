"""Protected Exchange servers and where each of their databases lives."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, Timestamped
from app.db.types import StrEnumType
from app.domain.protection import DatabaseLayout


class ExchangeServer(Timestamped, Base):
    __tablename__ = "exchange_servers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="SET NULL"), index=True
    )
    # The VM by moref, so the server survives an inventory resync that renumbers rows.
    vm_moref: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")

    databases: Mapped[list[ExchangeDatabase]] = relationship(
        back_populates="server", cascade="all, delete-orphan", order_by="ExchangeDatabase.name"
    )


class ExchangeDatabase(Timestamped, Base):
    """A mailbox database, the disk holding it, the disk holding its logs, and its layout."""

    __tablename__ = "exchange_databases"
    __table_args__ = (UniqueConstraint("server_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("exchange_servers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    database_disk_key: Mapped[int | None]
    log_disk_key: Mapped[int | None]
    layout: Mapped[DatabaseLayout] = mapped_column(StrEnumType(DatabaseLayout))

    server: Mapped[ExchangeServer] = relationship(back_populates="databases")
