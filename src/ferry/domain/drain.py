"""Drain (one maintenance operation on one host) state machine::

running --completed--> completed
   |  \\--fail------> failed --retry--> running
   +----cancel-----> cancelled          failed --cancel--> cancelled
"""

from __future__ import annotations

from enum import StrEnum

from ferry.domain.statemachine import StateMachine


class DrainState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DrainAction(StrEnum):
    COMPLETE = "complete"
    FAIL = "fail"
    RETRY = "retry"
    CANCEL = "cancel"


DRAIN = StateMachine[DrainState, DrainAction](
    "drain",
    {
        (DrainState.RUNNING, DrainAction.COMPLETE): DrainState.COMPLETED,
        (DrainState.RUNNING, DrainAction.FAIL): DrainState.FAILED,
        (DrainState.RUNNING, DrainAction.CANCEL): DrainState.CANCELLED,
        (DrainState.FAILED, DrainAction.RETRY): DrainState.RUNNING,
        (DrainState.FAILED, DrainAction.CANCEL): DrainState.CANCELLED,
    },
    terminal={DrainState.COMPLETED, DrainState.CANCELLED},
)

OPEN_DRAIN_STATES = frozenset({DrainState.RUNNING, DrainState.FAILED})
