"""Mail connections: what their options mean, signing in with them, and testing them.

A mail connection (kind ``mail``) is a mail server and a service account that can open every
mailbox. Its ``options``:

- ``tls``: ``starttls`` (port 143), ``tls`` (implicit TLS, port 993) or ``none`` (loopback
  and tests only); by default implicit TLS on port 993 and STARTTLS on any other.
- ``login``: ``master_user`` (Dovecot: ``<mailbox>*<account>``, the default) or ``authzid``
  (SASL PLAIN with the mailbox as authorization identity: Exchange full-access accounts).
- ``master_separator``: ``*`` by default.
- ``mailboxes``: the mailboxes on this server. IMAP has no directory of users, so they are
  listed here (from the server's user list or Exchange's ``Get-Mailbox``).
- ``protect``: ``"all"`` (default) or a list of some of ``mailboxes``.
- ``exchange_server``: the name of the Exchange server this mail service fronts. A policy with
  method ``mailbox`` targets that server (or one of its databases), and its backups cover the
  protected mailboxes of every mail connection naming the server.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.adapters import mail
from app.db.models import Connection
from app.db.types import utcnow
from app.domain.connections import ConnectionKind, ConnectionStatus
from app.security.secrets import SecretBox

MAILBOX_NAME = r"^[^\s*\x00-\x1f]{1,255}$"
TEST_TIMEOUT_S = 15.0


class MailOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # None: implicit TLS on port 993, STARTTLS on any other port.
    tls: Literal["starttls", "tls", "none"] | None = None
    login: Literal["master_user", "authzid"] = "master_user"
    master_separator: str = Field(default="*", min_length=1, max_length=4)
    mailboxes: list[str] = Field(default_factory=list, max_length=100_000)
    protect: Literal["all"] | list[str] = "all"
    exchange_server: str | None = Field(default=None, max_length=64)

    @field_validator("mailboxes")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        import re

        bad = [v for v in value if not re.match(MAILBOX_NAME, v)]
        if bad:
            raise ValueError(f"not a mailbox name: {bad[0]!r}")
        return list(dict.fromkeys(value))

    def tls_for(self, port: int | None) -> str:
        return self.tls or ("tls" if port == 993 else "starttls")

    def protected(self) -> list[str]:
        if self.protect == "all":
            return list(self.mailboxes)
        return [m for m in self.protect if m in self.mailboxes] or list(self.protect)


class InvalidMailOptions(ValueError):
    pass


def options_of(conn: Connection) -> MailOptions:
    try:
        return MailOptions.model_validate(conn.options or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidMailOptions(f"mail connection option {where}: {first['msg']}") from exc


def validate_options(options: dict) -> dict:
    """For the API: the options a mail connection may be saved with (raises
    InvalidMailOptions)."""
    try:
        return MailOptions.model_validate(options or {}).model_dump(exclude_none=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidMailOptions(f"options.{where}: {first['msg']}") from exc


def account_for(conn: Connection, secrets: SecretBox) -> mail.MailAccount:
    if conn.kind != ConnectionKind.MAIL:
        raise InvalidMailOptions(f"connection '{conn.name}' is a {conn.kind}, not a mail server")
    opts = options_of(conn)
    password = secrets.open(conn.secret_ciphertext, "connection") if conn.has_secret else ""
    tls = opts.tls_for(conn.port)
    return mail.MailAccount(
        host=conn.host,
        port=conn.port or (993 if tls == "tls" else 143),
        username=conn.username,
        password=password,
        tls=tls,
        verify_tls=conn.verify_tls,
        trusted_thumbprint=conn.trusted_thumbprint,
        login=opts.login,
        master_separator=opts.master_separator,
    )


@dataclass
class MailTestResult:
    ok: bool
    message: str
    about: str | None = None
    presented_thumbprint: str | None = None


def test_connection(conn: Connection, secrets: SecretBox) -> MailTestResult:
    """Sign in as the service account to each protected mailbox (the first few) and list its
    folders; record the outcome on the connection row."""
    try:
        opts = options_of(conn)
        # An operator waits for the answer: give up sooner than a backup would.
        account = dataclasses.replace(account_for(conn, secrets), timeout=TEST_TIMEOUT_S)
        targets = opts.protected()[:5] or [None]
        found = []
        for name in targets:
            with mail.connect(account, name) as session:
                folders = [f for f in session.folders() if f.selectable]
                found.append(f"{name or conn.username} ({len(folders)} folders)")
                caps = "CONDSTORE" if session.condstore else "no CONDSTORE (full sweeps)"
        more = len(opts.protected()) - len(targets)
        result = MailTestResult(
            True,
            f"signed in to {conn.host}; mailboxes: {', '.join(found)}"
            + (f" and {more} more" if more > 0 else "")
            + f"; {caps}",
            about=caps,
        )
    except mail.CertificateUntrusted as exc:
        result = MailTestResult(False, str(exc), presented_thumbprint=exc.thumbprint)
    except (mail.MailError, InvalidMailOptions) as exc:
        result = MailTestResult(False, str(exc))
    conn.status = ConnectionStatus.OK if result.ok else ConnectionStatus.FAILED
    conn.last_checked_at = utcnow()
    conn.last_error = None if result.ok else result.message
    return result
