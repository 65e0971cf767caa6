"""Service settings, read from ``BULWARK_*`` environment variables.

With nothing set, Bulwark keeps everything under ``./data``: a SQLite database and a
generated secret key, so a newcomer can start it with one command.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BULWARK_", env_file=None, extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="Where state lives by default")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; a SQLite file under data_dir when unset"
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Root key for sessions and secrets at rest; generated into data_dir if unset",
    )
    admin_password: SecretStr | None = Field(
        default=None, description="Creates user 'admin' on first start when no user exists"
    )
    admin_username: str = "admin"
    host: str = "127.0.0.1"
    port: int = 8080
    session_max_age_s: int = 8 * 3600
    # Cookies are marked Secure when the service is served over HTTPS (behind a proxy).
    secure_cookies: bool = False
    # Proxies whose X-Forwarded-For is believed (addresses or networks); none: the peer is
    # the client, whoever says otherwise.
    trusted_proxies: list[str] = []
    login_max_failures: int = 5
    login_window_s: int = 300
    log_level: str = "INFO"
    # "text" for people, "json" for log shippers (one object a line).
    log_format: Literal["text", "json"] = "text"
    # The worker `bulwark serve` runs in-process: its name and what it can reach.
    worker_name: str | None = None
    worker_capabilities: list[str] = ["vcenter", "array", "mail", "agent"]
    # HTTPS for `bulwark serve`: "self-signed" (made once under data_dir/tls), "off" (behind a
    # proxy that terminates TLS), or the operator's own certificate and key files.
    tls: str = "self-signed"
    # An agent silent this long fails its task (heartbeats come every few seconds).
    agent_silent_after_s: float = 60.0
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Outgoing mail for notifications; no host means no e-mail.
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "bulwark@localhost"
    # Every vCenter's inventory is re-read this often (0: only when asked).
    inventory_resync_minutes: int = 15
    # Repository upkeep the scheduler queues per repository (0: never): retention + garbage
    # collection, and a verify of a random share of every restore point's blocks.
    repository_expire_minutes: int = 360
    repository_verify_minutes: int = 1440
    # Alert (with failures) when a repository's disk is this full after a backup.
    repository_full_percent: int = Field(default=90, ge=1, le=100)
    repository_verify_sample: float = Field(default=0.1, gt=0, le=1)

    def tls_files(self) -> tuple[Path, Path] | None:
        """The certificate and key `bulwark serve` uses (generated when self-signed)."""
        if self.tls_cert_file and self.tls_key_file:
            return self.tls_cert_file, self.tls_key_file
        if self.tls == "off":
            return None
        from app.tls import self_signed

        return self_signed(self.data_dir / "tls")

    def tls_cert_path(self) -> Path | None:
        """The certificate's path if one exists, without generating one."""
        if self.tls_cert_file:
            return self.tls_cert_file
        path = self.data_dir / "tls" / "cert.pem"
        return path if self.tls != "off" and path.exists() else None

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'bulwark.db').resolve()}"

    def root_key(self) -> bytes:
        """The secret every derived key comes from.

        When none is configured one is generated once and kept in ``data_dir/secret.key``
        (mode 0600): losing that file means losing every stored credential.
        """
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        return path.read_text().strip().encode()


@lru_cache
def get_settings() -> Settings:
    return Settings()
