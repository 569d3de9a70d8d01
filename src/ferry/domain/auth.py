"""Roles and what each may do. Roles are sets of permissions, not a ladder, so the agent role
(hosts reporting about themselves) grants nothing an operator has."""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    READ = "read"
    OPERATE = "operate"
    MANAGE_TOKENS = "manage tokens"
    REPORT = "report as an agent"


class Role(StrEnum):
    READER = "reader"
    OPERATOR = "operator"
    ADMIN = "admin"
    AGENT = "agent"


PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.READER: frozenset({Permission.READ}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.OPERATE}),
    Role.ADMIN: frozenset({Permission.READ, Permission.OPERATE, Permission.MANAGE_TOKENS}),
    Role.AGENT: frozenset({Permission.REPORT}),
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]
