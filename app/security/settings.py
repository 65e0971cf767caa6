"""The security policy an admin sets at run time: where webhooks may go, how long tokens may
live. Kept as rows of ``service_settings``; a setting never written has its default."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import Actor, record
from app.db.models import ServiceSetting

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SecuritySettings(BaseModel):
    webhook_allowed_networks: list[str] = Field(
        default_factory=lambda: ["0.0.0.0/0", "::/0"],
        max_length=64,
        description="Networks webhooks may reach. Loopback and link-local addresses are "
        "refused unless a network listed here names them specifically (not 0.0.0.0/0)",
    )
    max_token_days: int | None = Field(
        default=None, ge=1, le=3650, description="Longest API token lifetime; none: no limit"
    )

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError as exc:
                raise ValueError(f"'{item}' is not a network (e.g. 192.0.2.0/24)") from exc
        return out


class SecuritySettingsChange(SecuritySettings):
    """A change: only the fields given are written (unknown fields are an error)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_null_lists(cls, value, info):
        if value is None and info.field_name == "webhook_allowed_networks":
            raise ValueError("give a list of networks (empty: webhooks go nowhere)")
        return value


def load(session: Session) -> SecuritySettings:
    stored = dict(session.execute(select(ServiceSetting.key, ServiceSetting.value)).all())
    known = {k: v for k, v in stored.items() if k in SecuritySettings.model_fields}
    return SecuritySettings.model_validate(known)


def save(session: Session, actor: Actor, changes: dict) -> SecuritySettings:
    merged = SecuritySettings.model_validate({**load(session).model_dump(), **changes})
    for key in changes:
        row = session.get(ServiceSetting, key)
        value = getattr(merged, key)
        if row is None:
            session.add(ServiceSetting(key=key, value=value, updated_by=actor.name))
        else:
            row.value, row.updated_by = value, actor.name
    record(session, actor, "settings.update", "settings", "security", fields=sorted(changes))
    return merged


def webhook_refusal(url: str, allowed: list[str], *, resolve: bool = True) -> str | None:
    """Why a webhook may not be sent to ``url``, or None. Every address the host name
    resolves to must be allowed (checked again at delivery: names can change)."""
    host = urlsplit(url).hostname
    if not host:
        return "the webhook URL has no host"
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        if not resolve:
            return None
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            # Not known here (yet): nothing to check, and nothing can be sent to it either.
            return None
        addresses = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}
    networks = [ipaddress.ip_network(n) for n in allowed]
    for address in addresses:
        fitting = [n for n in networks if n.version == address.version and address in n]
        sensitive = address.is_loopback or address.is_link_local or address.is_unspecified
        if sensitive:
            fitting = [n for n in fitting if n.prefixlen > 0]
        if not fitting:
            why = "loopback or link-local" if sensitive else "outside the allowed networks"
            return (
                f"webhook address {address} is {why}; an admin can allow it in the "
                "security settings (webhook_allowed_networks)"
            )
    return None
