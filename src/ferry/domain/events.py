"""Kinds of events: every state change and operator action is one, with its actor."""

from __future__ import annotations

from enum import StrEnum


class EventKind(StrEnum):
    HOST_REGISTERED = "host.registered"
    HOST_UPDATED = "host.updated"
    HOST_UP = "host.up"
    HOST_DOWN = "host.down"
    HOST_DISABLED = "host.disabled"
    HOST_ENABLED = "host.enabled"
    MAINTENANCE_ENTERED = "host.maintenance.entered"
    MAINTENANCE_COMPLETED = "host.maintenance.completed"
    MAINTENANCE_FAILED = "host.maintenance.failed"
    MAINTENANCE_EXITED = "host.maintenance.exited"
    DRAIN_STARTED = "drain.started"
    DRAIN_COMPLETED = "drain.completed"
    DRAIN_FAILED = "drain.failed"
    DRAIN_CANCELLED = "drain.cancelled"
    INSTANCE_CREATED = "instance.created"
    INSTANCE_RUNNING = "instance.running"
    INSTANCE_ERROR = "instance.error"
    INSTANCE_DELETING = "instance.deleting"
    INSTANCE_DELETED = "instance.deleted"
    MIGRATION_SCHEDULED = "migration.scheduled"
    MIGRATION_PREPARING = "migration.preparing"
    MIGRATION_RUNNING = "migration.running"
    MIGRATION_ESCALATED = "migration.escalated"
    MIGRATION_POSTCOPY = "migration.postcopy"
    MIGRATION_COMPLETED = "migration.completed"
    MIGRATION_FAILED = "migration.failed"
    MIGRATION_CANCELLED = "migration.cancelled"
    MIGRATION_ABORT_REQUESTED = "migration.abort_requested"
    MIGRATION_WAITING = "migration.waiting"
    MIGRATION_LEFTOVER = "migration.leftover"
    MIGRATION_CLEANED = "migration.cleaned"
    SERVER_GROUP_CREATED = "server_group.created"
    SERVER_GROUP_DELETED = "server_group.deleted"
    TOKEN_CREATED = "token.created"
    TOKEN_REVOKED = "token.revoked"


SYSTEM_ACTOR = "system"
