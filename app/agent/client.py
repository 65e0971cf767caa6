"""The agent's HTTPS client: the service's certificate pinned by its SHA-256 fingerprint.

The service's certificate is usually self-signed, so no CA vouches for it: at enrollment the
agent takes the fingerprint (from ``--fingerprint``, shown on the server's page, or from the
first connection) and from then on talks only to a server presenting exactly that
certificate. A dropped connection is retried with back-off; every call is safe to repeat.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit


class AgentHttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class PinMismatch(Exception):  # noqa: N818 - reads as what happened
    """The server's certificate is not the one pinned at enrollment."""


def fingerprint_of(der: bytes) -> str:
    return "sha256:" + hashlib.sha256(der).hexdigest()


def normalise_fingerprint(value: str) -> str:
    value = value.strip().lower().removeprefix("sha256:").replace(":", "")
    return "sha256:" + value


def fetch_fingerprint(url: str, timeout: float = 10) -> str:
    """The fingerprint of the certificate the server at ``url`` presents."""
    parts = urlsplit(url)
    ctx = _unverified_context()
    with (
        socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=parts.hostname) as tls,
    ):
        return fingerprint_of(tls.getpeercert(binary_form=True))


def _unverified_context() -> ssl.SSLContext:
    # Verification is the pin (checked on every connection), not a CA chain.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class AgentClient:
    def __init__(
        self,
        url: str,
        fingerprint: str,
        credential: str | None = None,
        *,
        timeout: float = 60,
        retries: int = 30,
    ):
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise ValueError("the agent talks to the service over HTTPS only")
        self.host = parts.hostname or ""
        self.port = parts.port or 443
        self.fingerprint = normalise_fingerprint(fingerprint)
        self.credential = credential
        self.timeout = timeout
        self.retries = retries
        self._conn: http.client.HTTPSConnection | None = None
        self._ctx = _unverified_context()
        self.bytes_sent = 0
        self.reconnects = 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self._ctx
            )
            conn.connect()
            got = fingerprint_of(conn.sock.getpeercert(binary_form=True))
            if got != self.fingerprint:
                conn.close()
                raise PinMismatch(
                    f"the service presented certificate {got}, not the pinned {self.fingerprint}"
                )
            self._conn = conn
        return self._conn

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | memoryview | None = None,
        timeout: float | None = None,
        accept_raw: bool = False,
    ) -> tuple[int, Any]:
        """One call, repeated after a dropped connection (every agent call is idempotent)."""
        headers = {"Accept": "application/json"}
        if self.credential:
            headers["Authorization"] = f"Bearer {self.credential}"
        if raw is not None:
            payload: bytes | memoryview | None = raw
            headers["Content-Type"] = "application/octet-stream"
        elif body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        else:
            payload = None
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                conn = self._connection()
                conn.timeout = timeout or self.timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout or self.timeout)
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if payload is not None:
                    self.bytes_sent += len(payload)
                status = response.status
                break
            except PinMismatch:
                raise
            except (OSError, http.client.HTTPException):
                self.close()
                self.reconnects += 1
                if attempt == self.retries:
                    raise
                time.sleep(delay)
                delay = min(5.0, delay * 2)
        if status >= 400:
            try:
                detail = json.loads(data).get("detail", data.decode(errors="replace"))
            except ValueError:
                detail = data.decode(errors="replace")[:500]
            raise AgentHttpError(status, str(detail))
        if accept_raw:
            return status, data
        if status == 204 or not data:
            return status, None
        return status, json.loads(data)

    def get(self, path: str, **kw) -> Any:
        return self.request("GET", path, **kw)[1]

    def post(self, path: str, body: Any = None, **kw) -> Any:
        return self.request("POST", path, body, **kw)[1]
