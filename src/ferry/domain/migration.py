"""Migration state machine (DESIGN.md)::

    queued -> scheduled -> preparing -> running [-> postcopy] -> switching -> completed
    queued -> scheduled -> completed  (cold: an instance that does not run; its record moves)
    any non-terminal state -> failed | cancelled

Cancel is refused once post-copy has started: the destination then holds the only complete copy of
the guest's state, so the migration can only go forward (or fail).
"""

from __future__ import annotations

from enum import StrEnum

from ferry.domain.statemachine import StateMachine


class MigrationState(StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    PREPARING = "preparing"
    RUNNING = "running"
    POSTCOPY = "postcopy"
    SWITCHING = "switching"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class MigrationAction(StrEnum):
    SCHEDULE = "schedule"
    PREPARE = "prepare"
    START = "start"
    POSTCOPY = "switch to post-copy"
    SWITCHOVER = "switch over"
    COMPLETE = "complete"
    MOVE_COLD = "move cold"
    FAIL = "fail"
    CANCEL = "cancel"


class MigrationKind(StrEnum):
    LIVE = "live"
    COLD = "cold"


_S, _A = MigrationState, MigrationAction
_FORWARD: dict[tuple[MigrationState, MigrationAction], MigrationState] = {
    (_S.QUEUED, _A.SCHEDULE): _S.SCHEDULED,
    (_S.SCHEDULED, _A.PREPARE): _S.PREPARING,
    (_S.SCHEDULED, _A.MOVE_COLD): _S.COMPLETED,
    (_S.PREPARING, _A.START): _S.RUNNING,
    (_S.RUNNING, _A.POSTCOPY): _S.POSTCOPY,
    (_S.RUNNING, _A.SWITCHOVER): _S.SWITCHING,
    (_S.POSTCOPY, _A.COMPLETE): _S.COMPLETED,
    (_S.SWITCHING, _A.COMPLETE): _S.COMPLETED,
}
_ACTIVE = [_S.QUEUED, _S.SCHEDULED, _S.PREPARING, _S.RUNNING, _S.POSTCOPY, _S.SWITCHING]
_FAILS: dict[tuple[MigrationState, MigrationAction], MigrationState] = {
    (state, _A.FAIL): _S.FAILED for state in _ACTIVE
}
_CANCELS: dict[tuple[MigrationState, MigrationAction], MigrationState] = {
    (state, _A.CANCEL): _S.CANCELLED for state in _ACTIVE if state is not _S.POSTCOPY
}

MIGRATION = StateMachine[MigrationState, MigrationAction](
    "migration",
    {**_FORWARD, **_FAILS, **_CANCELS},
    terminal={_S.COMPLETED, _S.FAILED, _S.CANCELLED},
)

ACTIVE_MIGRATION_STATES = frozenset(_ACTIVE)
