"""Shared field types for request bodies."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, model_validator

Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w .@-]*$"
    ),
]
ShortText = Annotated[str, StringConstraints(max_length=255)]
LongText = Annotated[str, StringConstraints(max_length=4000)]
Thumbprint = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$"),
]


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def check_host(value: str) -> str:
    """A host name or an IP address, nothing else: no scheme, path, port, space or CRLF (they
    would reach a TLS handshake, an SMTP/IMAP dialogue or a log line as they are)."""
    if value == "":
        return value
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        pass
    try:
        ascii_name = value.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"'{value}' is not a host name that can be encoded (IDNA)") from exc
    labels = ascii_name.rstrip(".").split(".")
    if len(ascii_name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"'{value}' is not a host name or IP address (no URL, port or spaces)")
    return value


HostName = Annotated[str, StringConstraints(max_length=253), AfterValidator(check_host)]


class Input(BaseModel):
    """Base for request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data):
        # PostgreSQL cannot store NUL in text, and no name, host or script needs one.
        if _has_nul(data):
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return data


class Patch(Input):
    """A partial change: a field left out stays as it is. ``null`` is accepted only for the
    fields that may be empty (``nullable``), never for one that must have a value."""

    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _null_only_where_empty_is_allowed(self):
        for name in sorted(self.model_fields_set):
            if getattr(self, name) is None and name not in self.nullable:
                raise ValueError(f"{name} cannot be null; leave it out to keep it as it is")
        return self


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def normalise_thumbprint(value: str | None) -> str | None:
    if value is None:
        return None
    hexdigits = value.replace(":", "").upper()
    return ":".join(hexdigits[i : i + 2] for i in range(0, len(hexdigits), 2))
