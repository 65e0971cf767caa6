"""Outside systems Bulwark talks to."""

from enum import StrEnum


class ConnectionKind(StrEnum):
    VCENTER = "vcenter"
    ARRAY = "array"
    REPOSITORY = "repository"
    MAIL = "mail"


class ConnectionStatus(StrEnum):
    UNTESTED = "untested"
    OK = "ok"
    FAILED = "failed"
