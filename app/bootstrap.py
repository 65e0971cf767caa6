"""First-start work: bring the schema to head and make sure someone can sign in."""

from __future__ import annotations

import logging

from sqlalchemy import func, select

from app.audit import SYSTEM, record
from app.db import migrate
from app.db.models import User
from app.security.passwords import hash_password
from app.security.roles import Role
from app.state import Runtime

log = logging.getLogger(__name__)


def prepare(runtime: Runtime) -> None:
    settings = runtime.settings
    if runtime.db.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(runtime.db.url)
    if settings.admin_password is None:
        return
    with runtime.db.session() as session:
        if session.scalar(select(func.count(User.id))):
            return
        session.add(
            User(
                username=settings.admin_username,
                password_hash=hash_password(settings.admin_password.get_secret_value()),
                role=Role.ADMIN,
            )
        )
        record(
            session,
            SYSTEM,
            "user.create",
            "user",
            settings.admin_username,
            role=Role.ADMIN,
            source="BULWARK_ADMIN_PASSWORD",
        )
        log.info("created first admin '%s' from BULWARK_ADMIN_PASSWORD", settings.admin_username)
