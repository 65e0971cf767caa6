"""Opening and testing a vCenter connection stored in the database."""

from __future__ import annotations

from dataclasses import dataclass

from app.adapters import vsphere
from app.db.models import Connection
from app.db.types import utcnow
from app.domain.connections import ConnectionStatus
from app.security.secrets import SecretBox


def open_client(conn: Connection, secrets: SecretBox) -> vsphere.VSphereClient:
    password = secrets.open(conn.secret_ciphertext, "connection") if conn.has_secret else ""
    return vsphere.connect(
        conn.host,
        conn.port or 443,
        conn.username,
        password,
        verify_tls=conn.verify_tls,
        trusted_thumbprint=conn.trusted_thumbprint,
    )


def fix_for(conn: Connection, exc: BaseException) -> str | None:
    """Where the operator fixes what ``exc`` says about ``conn`` (a dashboard path)."""
    if isinstance(exc, vsphere.CertificateUntrusted):
        return f"/connections/{conn.id}/trust"
    if isinstance(exc, vsphere.AuthenticationFailed):
        return f"/connections/{conn.id}"
    return None


@dataclass
class TestResult:
    ok: bool
    message: str
    about: str | None = None
    # The certificate the server presented, when it is not trusted: the operator may choose
    # to trust exactly this one.
    presented_thumbprint: str | None = None


def test_connection(conn: Connection, secrets: SecretBox) -> TestResult:
    """Log in and out; record the outcome on the connection row."""
    try:
        with open_client(conn, secrets) as client:
            result = TestResult(True, f"signed in to {client.about}", about=client.about)
    except vsphere.CertificateUntrusted as exc:
        result = TestResult(False, str(exc), presented_thumbprint=exc.thumbprint)
    except vsphere.VSphereError as exc:
        result = TestResult(False, str(exc))
    conn.status = ConnectionStatus.OK if result.ok else ConnectionStatus.FAILED
    conn.last_checked_at = utcnow()
    conn.last_error = None if result.ok else result.message
    return result
