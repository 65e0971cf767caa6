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


def test_a_guesser_does_not_lock_the_real_admin_out(db):
    throttle = LoginThrottle(max_failures=3, window_s=300)
    for _ in range(3):
        with db.session() as s, pytest.raises(SignInRefused):
            sign_in(s, throttle, "ops", "guess", "203.0.113.66")
    with db.session() as s, pytest.raises(SignInRefused, match="too many"):
        sign_in(s, throttle, "ops", "the-right-password", "203.0.113.66")
    # The real user, from their own address, still signs in.
    with db.session() as s:
        assert sign_in(s, throttle, "ops", "the-right-password", "10.0.0.5").username == "ops"


def test_failures_past_the_limit_back_off_and_spraying_is_held(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("app.security.ratelimit.time.monotonic", lambda: clock[0])
    throttle = LoginThrottle(max_failures=3, window_s=60)
    for _ in range(3):
        throttle.failed("ops", "203.0.113.66")
    assert 0 < throttle.retry_after("ops", "203.0.113.66") <= 61
    clock[0] += 61
    assert throttle.retry_after("ops", "203.0.113.66") == 0
    throttle.failed("ops", "203.0.113.66")  # the fourth: twice the window
    assert 60 < throttle.retry_after("ops", "203.0.113.66") <= 121
    clock[0] += 121
    throttle.failed("ops", "203.0.113.66")  # the fifth: four times
    assert 180 < throttle.retry_after("ops", "203.0.113.66") <= 241

    # One address trying many accounts is held on its own key.
    for n in range(12):
        throttle.failed(f"user{n}", "198.51.100.7")
    assert throttle.retry_after("someone-else", "198.51.100.7") > 0
    assert throttle.retry_after("someone-else", "192.0.2.1") == 0
