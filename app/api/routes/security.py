"""The security settings admins change at run time (app.security.settings)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import API_PREFIX
from app.api.deps import DbSession, require
from app.security import settings as security_settings
from app.security.roles import Permission
from app.security.settings import SecuritySettings, SecuritySettingsChange

router = APIRouter(prefix=API_PREFIX, tags=["security"])
Admin = require(Permission.MANAGE_USERS)


@router.get("/security-settings", response_model=SecuritySettings, summary="Security settings")
def read_settings(session: DbSession, _=Admin):
    return security_settings.load(session)


@router.patch(
    "/security-settings", response_model=SecuritySettings, summary="Change security settings"
)
def change_settings(body: SecuritySettingsChange, session: DbSession, principal=Admin):
    return security_settings.save(session, principal.actor, body.model_dump(exclude_unset=True))
