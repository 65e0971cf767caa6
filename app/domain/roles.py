"""The roles a user can have. What each role may do is the security layer's table
(app.security.roles); the catalog stores the role, so it lives here, below both."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    RESTORE_OPERATOR = "restore-operator"
    AUDITOR = "auditor"
