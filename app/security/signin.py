"""Password sign-in with throttling and an audit trail of every attempt."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import Actor, record
from app.db.models import User
from app.db.types import utcnow
from app.security.passwords import verify_password
from app.security.ratelimit import LoginThrottle


class SignInRefused(Exception):
    def __init__(self, message: str, retry_after: int = 0):
        super().__init__(message)
        self.retry_after = retry_after


def sign_in(
    session: Session, throttle: LoginThrottle, username: str, password: str, client_ip: str
) -> User:
    """Return the user, or raise SignInRefused with a message safe to show.

    The message never says whether the user name exists.
    """
    actor = Actor(username[:64] or "-", "user", client_ip)
    wait = throttle.retry_after(username, client_ip)
    if wait:
        record(session, actor, "auth.sign_in", "user", outcome="throttled")
        session.commit()
        raise SignInRefused(f"too many failed sign-ins; try again in {wait} s", wait)
    user = session.scalar(select(User).where(User.username == username))
    ok = verify_password(user.password_hash if user else None, password)
    if not ok or user is None or not user.is_active:
        throttle.failed(username, client_ip)
        record(session, actor, "auth.sign_in", "user", outcome="failure")
        session.commit()
        raise SignInRefused("wrong user name or password")
    throttle.succeeded(username, client_ip)
    user.last_login_at = utcnow()
    record(session, actor, "auth.sign_in", "user", user.id)
    return user
