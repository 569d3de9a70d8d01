"""Typed errors of the domain. The API maps each to one HTTP status with the message as-is."""

from __future__ import annotations

from typing import Any


class FerryError(Exception):
    """Base of every error Ferry reports to a user. `code` is stable and machine-readable."""

    code = "error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details  # machine-readable specifics, e.g. per-instance reasons


class InvalidInput(FerryError):
    code = "invalid_input"


class NotFound(FerryError):
    code = "not_found"


class Conflict(FerryError):
    """The request is well formed but contradicts the current state."""

    code = "conflict"


class IllegalTransition(Conflict):
    """An action that the entity's state machine does not allow from its current state."""

    code = "illegal_transition"

    def __init__(self, entity: str, state: str, action: str, allowed: list[str]) -> None:
        allowed_text = ", ".join(allowed) if allowed else "nothing"
        super().__init__(
            f"{entity}: cannot {action} in state '{state}'; allowed there: {allowed_text}"
        )
        self.entity = entity
        self.state = state
        self.action = action
        self.allowed = allowed


class TooLarge(FerryError):
    """The request carries more than the controller accepts (an upload over its limit)."""

    code = "too_large"


class Unavailable(FerryError):
    """The controller cannot do this now, through no fault of the request (a tool missing)."""

    code = "unavailable"


class Unauthenticated(FerryError):
    code = "unauthenticated"


class Forbidden(FerryError):
    code = "forbidden"
