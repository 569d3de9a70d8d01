"""Every (state, action) pair of every state machine, against tables written out here by hand."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import pytest

from ferry.domain.drain import DRAIN, DrainAction, DrainState
from ferry.domain.errors import Conflict, IllegalTransition
from ferry.domain.host import (
    ADMIN,
    MAINTENANCE,
    AdminAction,
    AdminState,
    Liveness,
    MaintenanceAction,
    MaintenanceState,
    excluded_from_scheduling,
    liveness,
)
from ferry.domain.instance import INSTANCE, InstanceAction, InstanceState
from ferry.domain.migration import MIGRATION, MigrationAction, MigrationState
from ferry.domain.statemachine import StateMachine


@dataclass(frozen=True)
class Spec:
    machine: StateMachine[Any, Any]
    states: type[StrEnum]
    actions: type[StrEnum]
    # state value -> {action value: target state value}; an absent pair must be illegal.
    table: dict[str, dict[str, str]]
    terminal: frozenset[str]


_MIGRATION_TABLE: dict[str, dict[str, str]] = {
    "queued": {"SCHEDULE": "scheduled", "FAIL": "failed", "CANCEL": "cancelled"},
    "scheduled": {
        "PREPARE": "preparing",
        "MOVE_COLD": "completed",
        "FAIL": "failed",
        "CANCEL": "cancelled",
    },
    "preparing": {"START": "running", "FAIL": "failed", "CANCEL": "cancelled"},
    "running": {
        "POSTCOPY": "postcopy",
        "SWITCHOVER": "switching",
        "FAIL": "failed",
        "CANCEL": "cancelled",
    },
    # Once post-copy started the destination holds the only complete state: no cancel.
    "postcopy": {"COMPLETE": "completed", "FAIL": "failed"},
    "switching": {"COMPLETE": "completed", "FAIL": "failed", "CANCEL": "cancelled"},
}

SPECS: dict[str, Spec] = {
    "admin": Spec(
        ADMIN,
        AdminState,
        AdminAction,
        {"enabled": {"DISABLE": "disabled"}, "disabled": {"ENABLE": "enabled"}},
        frozenset(),
    ),
    "maintenance": Spec(
        MAINTENANCE,
        MaintenanceState,
        MaintenanceAction,
        {
            "in_service": {"ENTER": "draining"},
            "draining": {
                "DRAINED": "in_maintenance",
                "FAIL": "drain_failed",
                "EXIT": "in_service",
            },
            "drain_failed": {
                "RETRY": "draining",
                "EXIT": "in_service",
            },
            "in_maintenance": {"EXIT": "in_service"},
        },
        frozenset(),
    ),
    "migration": Spec(
        MIGRATION,
        MigrationState,
        MigrationAction,
        _MIGRATION_TABLE,
        frozenset({"completed", "failed", "cancelled"}),
    ),
    "drain": Spec(
        DRAIN,
        DrainState,
        DrainAction,
        {
            "running": {"COMPLETE": "completed", "FAIL": "failed", "CANCEL": "cancelled"},
            "failed": {"RETRY": "running", "CANCEL": "cancelled"},
        },
        frozenset({"completed", "cancelled"}),
    ),
    "instance": Spec(
        INSTANCE,
        InstanceState,
        InstanceAction,
        {
            "building": {"BOOTED": "running", "FAIL": "error", "DELETE": "deleting"},
            "running": {"STOP": "stopped", "FAIL": "error", "DELETE": "deleting"},
            "stopped": {"START": "running", "DELETE": "deleting"},
            "error": {"DELETE": "deleting"},
            "deleting": {"DELETED": "deleted"},
        },
        frozenset({"deleted"}),
    ),
}


def _all_pairs() -> list[Any]:
    return [
        pytest.param(name, state.value, action.name, id=f"{name}:{state.value}+{action.name}")
        for name, spec in SPECS.items()
        for state in spec.states
        for action in spec.actions
    ]


@pytest.mark.parametrize(("name", "state", "action"), _all_pairs())
def test_every_state_action_pair(name: str, state: str, action: str) -> None:
    spec = SPECS[name]
    source, act = spec.states(state), spec.actions[action]
    allowed = spec.table.get(state, {})
    if action in allowed:
        assert spec.machine.can(source, act)
        assert spec.machine.apply(source, act) == spec.states(allowed[action])
        return
    assert not spec.machine.can(source, act)
    with pytest.raises(IllegalTransition) as caught:
        spec.machine.apply(source, act, name="thing-1")
    error = caught.value
    assert isinstance(error, Conflict)
    assert error.code == "illegal_transition"
    allowed_labels = [spec.actions[other].value for other in allowed]
    assert (error.state, error.action) == (state, act.value)
    assert sorted(error.allowed) == sorted(allowed_labels)
    message = str(error)
    assert message == error.message
    assert f"'{state}'" in message
    assert act.value in message
    assert "'thing-1'" in message
    for label in allowed_labels:
        assert label in message


@pytest.mark.parametrize("name", list(SPECS))
def test_tables_match_exactly(name: str) -> None:
    spec = SPECS[name]
    expected = {
        (spec.states(source), spec.actions[action]): spec.states(target)
        for source, row in spec.table.items()
        for action, target in row.items()
    }
    assert spec.machine.transitions() == expected
    for state in spec.states:
        allowed = spec.machine.allowed(state)
        assert sorted(a.name for a in allowed) == sorted(spec.table.get(state.value, {}))


@pytest.mark.parametrize("name", list(SPECS))
def test_terminal_states_have_no_transitions(name: str) -> None:
    spec = SPECS[name]
    assert {s.value for s in spec.machine.terminal} == spec.terminal
    for state in spec.terminal:
        assert spec.machine.allowed(spec.states(state)) == []
        assert state not in spec.table


def test_cancel_is_refused_once_postcopy_started() -> None:
    with pytest.raises(IllegalTransition) as caught:
        MIGRATION.apply(MigrationState.POSTCOPY, MigrationAction.CANCEL)
    assert caught.value.allowed == [MigrationAction.COMPLETE.value, MigrationAction.FAIL.value]
    assert MIGRATION.apply(MigrationState.SWITCHING, MigrationAction.CANCEL) is (
        MigrationState.CANCELLED
    )


def test_message_without_a_name_names_the_entity() -> None:
    with pytest.raises(IllegalTransition) as caught:
        DRAIN.apply(DrainState.COMPLETED, DrainAction.RETRY)
    assert caught.value.allowed == []
    assert caught.value.entity == "drain"
    assert "drain" in caught.value.message
    assert "'completed'" in caught.value.message


class _S(StrEnum):
    OPEN = "open"
    SHUT = "shut"


class _A(StrEnum):
    CLOSE = "close"
    REOPEN = "reopen"


def test_state_machine_rejects_transition_out_of_a_terminal_state() -> None:
    with pytest.raises(ValueError, match="terminal state shut has an outgoing transition"):
        StateMachine[_S, _A](
            "door",
            {(_S.OPEN, _A.CLOSE): _S.SHUT, (_S.SHUT, _A.REOPEN): _S.OPEN},
            terminal={_S.SHUT},
        )
    door = StateMachine[_S, _A]("door", {(_S.OPEN, _A.CLOSE): _S.SHUT}, terminal={_S.SHUT})
    assert door.apply(_S.OPEN, _A.CLOSE) is _S.SHUT


@pytest.mark.parametrize(
    ("state", "excluded"),
    [
        (MaintenanceState.IN_SERVICE, False),
        (MaintenanceState.DRAINING, True),
        (MaintenanceState.DRAIN_FAILED, True),
        (MaintenanceState.IN_MAINTENANCE, True),
    ],
)
def test_excluded_from_scheduling(state: MaintenanceState, excluded: bool) -> None:
    assert excluded_from_scheduling(state) is excluded


NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
INTERVAL = timedelta(seconds=10)


@pytest.mark.parametrize(
    ("age", "misses", "expected"),
    [
        (timedelta(0), 3, Liveness.UP),
        (INTERVAL * 3 - timedelta(microseconds=1), 3, Liveness.UP),
        (INTERVAL * 3, 3, Liveness.DOWN),
        (INTERVAL * 3 + timedelta(microseconds=1), 3, Liveness.DOWN),
        (INTERVAL - timedelta(microseconds=1), 1, Liveness.UP),
        (INTERVAL, 1, Liveness.DOWN),
        (INTERVAL * 5 - timedelta(microseconds=1), 5, Liveness.UP),
        (INTERVAL * 5, 5, Liveness.DOWN),
    ],
)
def test_liveness_boundary(age: timedelta, misses: int, expected: Liveness) -> None:
    assert liveness(NOW - age, NOW, INTERVAL, misses) is expected


def test_liveness_default_is_three_misses() -> None:
    assert liveness(NOW - INTERVAL * 3, NOW, INTERVAL) is Liveness.DOWN
    assert liveness(NOW - INTERVAL * 3 + timedelta(microseconds=1), NOW, INTERVAL) is Liveness.UP


def test_liveness_without_any_heartbeat_is_down() -> None:
    assert liveness(None, NOW, INTERVAL) is Liveness.DOWN
