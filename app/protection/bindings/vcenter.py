"""vCenter sessions for jobs: a job takes a logged-in session on first use and gives it back
when it ends; the worker process keeps it for its next job.

Logging in costs vCenter a TLS handshake, an SSO check and a session; a worker running a
thousand backups should not log in a thousand times (vCenter also limits its sessions). A
session is used by one job at a time (pyVmomi clients are not shared between threads), is
checked before it is handed out again (an expired or killed session is dropped and replaced),
and is only reused for a connection whose address, credentials and trusted certificate are
unchanged. Idle sessions are logged out after :data:`IDLE_SECONDS`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from typing import Any

from app.adapters import vsphere
from app.db.models import Connection
from app.db.session import Database
from app.inventory.vcenter import fix_for, open_client
from app.jobs.context import JobContext, PermanentError
from app.security.secrets import SecretBox

log = logging.getLogger(__name__)

IDLE_SECONDS = 300.0
"""Idle sessions older than this are logged out instead of reused (vCenter's own idle
timeout is 30 minutes by default)."""
MAX_IDLE_PER_CONNECTION = 8


def _session_key(conn: Connection) -> str:
    """Sessions are reused only for the very same address, account, secret and trust."""
    parts = (
        str(conn.id),
        conn.host or "",
        str(conn.port or 443),
        conn.username or "",
        (conn.secret_ciphertext or b"").hex(),
        conn.trusted_thumbprint or "",
        str(bool(conn.verify_tls)),
    )
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _alive(client: Any) -> bool:
    """One cheap round trip: does vCenter still know this session?"""
    try:
        return client.content.sessionManager.currentSession is not None
    except Exception:  # noqa: BLE001 - any failure means: do not reuse it
        return False


class SessionPool:
    """Logged-in vCenter sessions between the jobs of one process (thread-safe)."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS, max_idle: int = MAX_IDLE_PER_CONNECTION):
        self.idle_seconds = idle_seconds
        self.max_idle = max_idle
        self._idle: dict[str, list[tuple[float, Any]]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> Any | None:
        """An idle, still valid session for ``key``, or None."""
        while True:
            stale = []
            with self._lock:
                entries = self._idle.get(key, [])
                now = time.monotonic()
                while entries and now - entries[0][0] > self.idle_seconds:
                    stale.append(entries.pop(0)[1])
                found = entries.pop()[1] if entries else None
            for client in stale:
                _close(client)
            if found is None:
                return None
            if _alive(found):
                return found
            log.info("dropping an expired vCenter session %r", found)
            _close(found)

    def give(self, key: str, client: Any) -> None:
        """Keep ``client`` for the next job (or log it out when enough are kept)."""
        now = time.monotonic()
        stale = []
        with self._lock:
            # Sessions of connections no job uses any more are logged out too.
            for other in list(self._idle):
                entries = self._idle[other]
                while entries and now - entries[0][0] > self.idle_seconds:
                    stale.append(entries.pop(0)[1])
                if not entries:
                    del self._idle[other]
            entries = self._idle.setdefault(key, [])
            if len(entries) < self.max_idle:
                entries.append((now, client))
                client = None
        for old in stale:
            _close(old)
        if client is not None:
            _close(client)

    def clear(self) -> None:
        """Log out every idle session."""
        with self._lock:
            clients = [c for entries in self._idle.values() for _, c in entries]
            self._idle.clear()
        for client in clients:
            _close(client)


def _close(client: Any) -> None:
    with contextlib.suppress(Exception):  # a dead session needs no logout
        client.close()


sessions = SessionPool()
"""This process's pool (every worker thread of the process shares it)."""


class JobVCenterAccess:
    def __init__(self, db: Database, secrets: SecretBox, pool: SessionPool | None = None):
        self._db = db
        self._secrets = secrets
        self._pool = pool if pool is not None else sessions
        self._clients: dict[int, tuple[str, Any]] = {}
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
            conn = self._connection(connection_id)
            key = _session_key(conn)
            try:
                client = self._pool.take(key) or open_client(conn, self._secrets)
            except vsphere.VSphereError as exc:
                if not exc.permanent:
                    raise
                raise PermanentError(
                    f"vCenter '{conn.name}': {exc}", fix=fix_for(conn, exc)
                ) from exc
            self._clients[connection_id] = (key, client)
        return self._clients[connection_id][1]

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
        """The job is done with its sessions: they go back to the pool for the next job."""
        for key, client in self._clients.values():
            self._pool.give(key, client)
        self._clients.clear()
        self._guests.clear()


def job_secrets(ctx: JobContext) -> SecretBox:
    """The service's key for stored credentials, which a job needs to reach anything."""
    if ctx.runtime is None:
        raise PermanentError("this worker was started without the service's keys")
    return ctx.runtime.secrets


def for_job(ctx: JobContext) -> JobVCenterAccess:
    return JobVCenterAccess(ctx.db, job_secrets(ctx))
