"""A small checked state machine: one transition table per entity, every change goes through it."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Generic, TypeVar

from ferry.domain.errors import IllegalTransition

S = TypeVar("S", bound=StrEnum)
A = TypeVar("A", bound=StrEnum)


class StateMachine(Generic[S, A]):
    """Maps (state, action) to the next state; anything absent from the table is illegal."""

    def __init__(self, entity: str, transitions: Mapping[tuple[S, A], S], terminal: set[S]):
        self.entity = entity
        self._table = dict(transitions)
        self.terminal = frozenset(terminal)
        for (state, _action), _target in self._table.items():
            if state in self.terminal:
                raise ValueError(f"{entity}: terminal state {state} has an outgoing transition")

    def allowed(self, state: S) -> list[A]:
        """Actions allowed from `state`, in table order."""
        return [action for (source, action) in self._table if source == state]

    def can(self, state: S, action: A) -> bool:
        return (state, action) in self._table

    def apply(self, state: S, action: A, *, name: str | None = None) -> S:
        """The state after `action`, or IllegalTransition naming what would have been allowed."""
        try:
            return self._table[(state, action)]
        except KeyError:
            entity = f"{self.entity} '{name}'" if name else self.entity
            raise IllegalTransition(
                entity, state.value, action.value, [a.value for a in self.allowed(state)]
            ) from None

    def transitions(self) -> dict[tuple[S, A], S]:
        return dict(self._table)
