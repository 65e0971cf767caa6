"""What one running Bulwark process holds: settings, database, keys, throttles."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.config import Settings
from app.db.session import Database
from app.security.ratelimit import LoginThrottle
from app.security.secrets import SecretBox, derive_key


@dataclass
class Runtime:
    settings: Settings
    db: Database
    secrets: SecretBox
    session_key: bytes
    throttle: LoginThrottle
    extras: dict = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, *, pre_ping: bool = True) -> Runtime:
        """``pre_ping=False`` for a worker process (see :func:`app.db.session.make_engine`)."""
        root = settings.root_key()
        return cls(
            settings=settings,
            db=Database(settings.effective_database_url, pre_ping=pre_ping),
            secrets=SecretBox(root),
            session_key=derive_key(root, "session-cookies"),
            throttle=LoginThrottle(settings.login_max_failures, settings.login_window_s),
        )
