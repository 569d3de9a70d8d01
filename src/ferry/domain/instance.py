"""Instance power/lifecycle state. Whether it is moving is a fact of its active migration record,
not a state of its own (Nova's vm_state/task_state split)."""

from __future__ import annotations

from enum import StrEnum

from ferry.domain.statemachine import StateMachine


class InstanceState(StrEnum):
    BUILDING = "building"
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"
    DELETING = "deleting"
    DELETED = "deleted"


class InstanceAction(StrEnum):
    BOOTED = "finish booting"
    STOP = "stop"
    START = "start"
    FAIL = "fail"
    DELETE = "delete"
    DELETED = "finish deleting"


_S, _A = InstanceState, InstanceAction
INSTANCE = StateMachine[InstanceState, InstanceAction](
    "instance",
    {
        (_S.BUILDING, _A.BOOTED): _S.RUNNING,
        (_S.BUILDING, _A.FAIL): _S.ERROR,
        (_S.RUNNING, _A.STOP): _S.STOPPED,
        (_S.RUNNING, _A.FAIL): _S.ERROR,
        (_S.STOPPED, _A.START): _S.RUNNING,
        (_S.BUILDING, _A.DELETE): _S.DELETING,
        (_S.RUNNING, _A.DELETE): _S.DELETING,
        (_S.STOPPED, _A.DELETE): _S.DELETING,
        (_S.ERROR, _A.DELETE): _S.DELETING,
        (_S.DELETING, _A.DELETED): _S.DELETED,
    },
    terminal={_S.DELETED},
)
