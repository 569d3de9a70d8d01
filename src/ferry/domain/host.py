"""Host states: administrative (enabled/disabled), maintenance, and liveness from heartbeats.

Maintenance state machine (DESIGN.md)::

    in_service --enter--> draining --drained--> in_maintenance
        ^                   |   |                    |
        |                   |   +--fail--> drain_failed --retry--> draining
        +------exit---------+--------------exit------+
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from ferry.domain.statemachine import StateMachine


class AdminState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class AdminAction(StrEnum):
    DISABLE = "disable"
    ENABLE = "enable"


ADMIN = StateMachine[AdminState, AdminAction](
    "host",
    {
        (AdminState.ENABLED, AdminAction.DISABLE): AdminState.DISABLED,
        (AdminState.DISABLED, AdminAction.ENABLE): AdminState.ENABLED,
    },
    terminal=set(),
)


class MaintenanceState(StrEnum):
    IN_SERVICE = "in_service"
    DRAINING = "draining"
    IN_MAINTENANCE = "in_maintenance"
    DRAIN_FAILED = "drain_failed"


class MaintenanceAction(StrEnum):
    ENTER = "enter maintenance"
    DRAINED = "complete the drain"
    FAIL = "fail the drain"
    RETRY = "retry the drain"
    EXIT = "exit maintenance"


MAINTENANCE = StateMachine[MaintenanceState, MaintenanceAction](
    "host",
    {
        (MaintenanceState.IN_SERVICE, MaintenanceAction.ENTER): MaintenanceState.DRAINING,
        (MaintenanceState.DRAINING, MaintenanceAction.DRAINED): MaintenanceState.IN_MAINTENANCE,
        (MaintenanceState.DRAINING, MaintenanceAction.FAIL): MaintenanceState.DRAIN_FAILED,
        (MaintenanceState.DRAINING, MaintenanceAction.EXIT): MaintenanceState.IN_SERVICE,
        (MaintenanceState.DRAIN_FAILED, MaintenanceAction.RETRY): MaintenanceState.DRAINING,
        (MaintenanceState.DRAIN_FAILED, MaintenanceAction.EXIT): MaintenanceState.IN_SERVICE,
        (MaintenanceState.IN_MAINTENANCE, MaintenanceAction.EXIT): MaintenanceState.IN_SERVICE,
    },
    terminal=set(),
)


def excluded_from_scheduling(maintenance: MaintenanceState) -> bool:
    """Every state but in_service keeps the scheduler away, from the moment of entering."""
    return maintenance is not MaintenanceState.IN_SERVICE


class Liveness(StrEnum):
    UP = "up"
    DOWN = "down"


def liveness(
    last_heartbeat: datetime | None, now: datetime, interval: timedelta, misses: int = 3
) -> Liveness:
    """A host is down once `misses` heartbeat intervals have passed without one."""
    if last_heartbeat is None or now - last_heartbeat >= interval * misses:
        return Liveness.DOWN
    return Liveness.UP


def heartbeat_deadline(now: datetime, interval: timedelta, misses: int = 3) -> datetime:
    """Hosts whose last heartbeat is older than this are down."""
    return now - interval * misses
