"""Reading the stored inventory: the one way to find a server's VM (by connection and moref,
as the last sync stored it)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.db.models import ExchangeServer, VirtualMachine


def server_vm(session: Session, server: ExchangeServer) -> VirtualMachine | None:
    """The server's VM with its disks, or None (not linked to one, or not synced yet)."""
    if server.connection_id is None or server.vm_moref is None:
        return None
    return session.scalar(
        select(VirtualMachine)
        .where(
            VirtualMachine.connection_id == server.connection_id,
            VirtualMachine.moref == server.vm_moref,
        )
        .options(selectinload(VirtualMachine.disks))
    )
