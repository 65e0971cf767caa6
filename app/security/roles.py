"""Roles and what each may do. Every route asks for one permission from this table."""

from __future__ import annotations

from enum import StrEnum

from app.domain.roles import Role

__all__ = ["ROLE_PERMISSIONS", "Permission", "Role", "role_allows"]


class Permission(StrEnum):
    READ = "read"  # inventory, policies, jobs, restore points
    MANAGE_CONNECTIONS = "manage_connections"  # they hold credentials: admins only
    MANAGE_PROTECTION = "manage_protection"  # servers, databases, policies
    RUN_BACKUP = "run_backup"  # start backup / verify / sync jobs, cancel them
    RUN_RESTORE = "run_restore"
    MANAGE_HOLDS = "manage_holds"
    MANAGE_USERS = "manage_users"
    READ_AUDIT = "read_audit"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPERATOR: frozenset(
        {
            Permission.READ,
            Permission.MANAGE_PROTECTION,
            Permission.RUN_BACKUP,
            Permission.RUN_RESTORE,
        }
    ),
    Role.RESTORE_OPERATOR: frozenset({Permission.READ, Permission.RUN_RESTORE}),
    # Auditors see everything, the audit log included, and change nothing.
    Role.AUDITOR: frozenset({Permission.READ, Permission.READ_AUDIT}),
}


def role_allows(role: Role | str, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[Role(role)]
