from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, SecretStr, field_validator

from app.api.schemas.common import Input, Output, Patch
from app.security.roles import Role

Username = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.@-]*$")]
NewPassword = Annotated[SecretStr, Field(min_length=12, max_length=256)]


class UserCreate(Input):
    username: Username
    full_name: Annotated[str, Field(max_length=128)] = ""
    password: NewPassword
    role: Role


class UserUpdate(Patch):
    full_name: Annotated[str, Field(max_length=128)] | None = None
    password: NewPassword | None = None
    role: Role | None = None
    is_active: bool | None = None


class PasswordChange(Input):
    current_password: SecretStr = Field(max_length=256)
    new_password: NewPassword


class UserOut(Output):
    id: int
    username: str
    full_name: str
    role: Role
    is_active: bool
    last_login_at: datetime | None
    created_at: datetime


class TokenCreate(Input):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    expires_in_days: int | None = Field(
        default=90, ge=1, le=3650, description="null for a token that never expires"
    )
    user_id: int | None = Field(default=None, description="Admins may create tokens for others")

    @field_validator("name")
    @classmethod
    def _strip(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("name must not be blank")
        return v.strip()


class TokenOut(Output):
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="Shown once; store it now")
