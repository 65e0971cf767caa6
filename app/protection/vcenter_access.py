"""vCenter sessions for one job: opened on first use, closed when the job ends."""

from __future__ import annotations

import contextlib
from typing import Any

from app.adapters import vsphere
from app.db.models import Connection
from app.db.session import Database
from app.inventory.vcenter import open_client
from app.security.secrets import SecretBox


class JobVCenterAccess:
    def __init__(self, db: Database, secrets: SecretBox):
        self._db = db
        self._secrets = secrets
        self._clients: dict[int, Any] = {}
        self._guests: dict[int, vsphere.GuestOperations] = {}

    def _connection(self, connection_id: int) -> Connection:
        with self._db.session() as session:
            conn = session.get(Connection, connection_id)
            if conn is None:
                raise vsphere.VSphereError(f"vCenter connection {connection_id} was removed")
            session.expunge(conn)
            return conn

    def client(self, connection_id: int) -> Any:
        if connection_id not in self._clients:
            self._clients[connection_id] = open_client(
                self._connection(connection_id), self._secrets
            )
        return self._clients[connection_id]

    def guest(self, connection_id: int) -> vsphere.GuestOperations:
        if connection_id not in self._guests:
            conn = self._connection(connection_id)
            if not conn.guest_username or not conn.has_guest_secret:
                raise vsphere.VSphereError(
                    f"vCenter connection '{conn.name}' has no guest credentials for running "
                    "pre/post-snapshot scripts; set guest_username and guest_password"
                )
            password = self._secrets.open(conn.guest_secret_ciphertext, "guest")
            self._guests[connection_id] = vsphere.GuestOperations(conn.guest_username, password)
        return self._guests[connection_id]

    def close(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):  # a dead session needs no logout
                client.close()
        self._clients.clear()
