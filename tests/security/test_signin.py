from __future__ import annotations

import pytest
from sqlalchemy import select

from app.accounts import create_user
from app.audit import SYSTEM
from app.db import migrate
from app.db.models import AuditEvent
from app.db.session import Database
from app.security.ratelimit import LoginThrottle
from app.security.roles import Role
from app.security.signin import SignInRefused, sign_in


@pytest.fixture
def db(database_url):
    migrate.upgrade(database_url)
    database = Database(database_url)
    with database.session() as s:
        create_user(s, SYSTEM, "ops", "the-right-password", Role.OPERATOR)
    yield database
    database.dispose()


def test_failed_sign_ins_are_throttled_and_audited(db):
    throttle = LoginThrottle(max_failures=3, window_s=300)
    for _ in range(3):
        with db.session() as s, pytest.raises(SignInRefused, match="wrong user name"):
            sign_in(s, throttle, "ops", "guess", "10.0.0.9")
    # Locked out now, even with the right password.
    with db.session() as s, pytest.raises(SignInRefused) as refused:
        sign_in(s, throttle, "ops", "the-right-password", "10.0.0.9")
    assert refused.value.retry_after > 0
    with db.session() as s:
        outcomes = s.scalars(
            select(AuditEvent.outcome).where(AuditEvent.action == "auth.sign_in")
        ).all()
    assert outcomes.count("failure") == 3 and outcomes.count("throttled") == 1


def test_unknown_user_gets_the_same_message(db):
    throttle = LoginThrottle(5, 300)
    with db.session() as s, pytest.raises(SignInRefused, match="wrong user name or password"):
        sign_in(s, throttle, "nobody", "x", "10.0.0.1")


def test_successful_sign_in_records_time(db):
    with db.session() as s:
        user = sign_in(s, LoginThrottle(5, 300), "ops", "the-right-password", "10.0.0.2")
        assert user.last_login_at is not None
