from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator

from app.api.schemas.common import HostName, Input, LongText, Name, Output, Patch, Thumbprint
from app.domain.connections import ConnectionKind, ConnectionStatus

OptionValue = str | int | bool | list[str]
Options = Annotated[dict[Annotated[str, Field(max_length=64)], OptionValue], Field(max_length=32)]
Password = Annotated[SecretStr, Field(max_length=1024)]


class ConnectionCreate(Input):
    name: Name
    kind: ConnectionKind
    host: HostName = ""
    port: int | None = Field(default=None, ge=1, le=65535)
    username: Annotated[str, Field(max_length=128)] = ""
    password: Password | None = Field(default=None, description="Write-only; never returned")
    guest_username: Annotated[str, Field(max_length=128)] = Field(
        default="", description="vCenter: guest account for pre/post-snapshot scripts"
    )
    guest_password: Password | None = Field(default=None, description="Write-only")
    verify_tls: bool = True
    trusted_thumbprint: Thumbprint | None = Field(
        default=None, description="SHA-256 of a certificate to trust explicitly (audited)"
    )
    options: Options = Field(default_factory=dict)
    description: LongText = ""

    @field_validator("options")
    @classmethod
    def _no_secrets_in_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if any(word in key.lower() for word in ("password", "secret", "key", "token")):
                raise ValueError(f"option '{key}' looks secret; send it as 'password'")
        return value


class ConnectionUpdate(Patch):
    nullable = frozenset({"guest_password", "password", "port", "trusted_thumbprint"})

    name: Name | None = None
    host: HostName | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    username: Annotated[str, Field(max_length=128)] | None = None
    password: Password | None = Field(default=None, description="Write-only; omit to keep")
    guest_username: Annotated[str, Field(max_length=128)] | None = None
    guest_password: Password | None = Field(default=None, description="Write-only; omit to keep")
    verify_tls: bool | None = None
    trusted_thumbprint: Thumbprint | None = None
    options: Options | None = None
    description: LongText | None = None

    @field_validator("options")
    @classmethod
    def _no_secrets_in_options(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return value if value is None else ConnectionCreate._no_secrets_in_options(value)


class TrustIn(Input):
    """Trust the certificate the server presents, by its SHA-256 fingerprint."""

    fingerprint: Thumbprint = Field(
        description="SHA-256 of the certificate as the operator checked it out of band; "
        "refused unless the server presents exactly this certificate now"
    )


class ConnectionOut(Output):
    id: int
    name: str
    kind: ConnectionKind
    host: str
    port: int | None
    username: str
    has_secret: bool
    guest_username: str
    has_guest_secret: bool
    verify_tls: bool
    trusted_thumbprint: str | None
    options: dict[str, Any]
    description: str
    status: ConnectionStatus
    last_checked_at: datetime | None
    last_synced_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
