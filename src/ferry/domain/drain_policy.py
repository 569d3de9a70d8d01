"""How a drain moves a host's instances: concurrency limits, retries, and the convergence policy
of its migrations. Pure.

Defaults (overridable per drain and by configuration):
- max_parallel 8: drain migrations in flight in the whole cluster;
- max_outbound 2: migrations streaming from one source at once (they share its link);
- prepare_ahead 1: destinations prepared beyond those streams, so the link never waits for a
  QEMU to start;
- max_inbound 2: migrations in flight into one destination;
- max_attempts 3 per instance, each retry to a destination that has not failed it, after
  `retry_backoff_s` doubled per attempt;
- migration: convergence policy overrides for the drain's migrations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ferry.domain.errors import InvalidInput

LIMITS = ("max_parallel", "max_outbound", "prepare_ahead", "max_inbound", "max_attempts")


@dataclass(frozen=True)
class DrainPolicy:
    max_parallel: int = 8
    max_outbound: int = 2
    prepare_ahead: int = 1
    max_inbound: int = 2
    max_attempts: int = 3
    retry_backoff_s: float = 5.0
    migration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in LIMITS:
            value = getattr(self, name)
            low = 0 if name == "prepare_ahead" else 1
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 1000:
                raise InvalidInput(f"{name} must be a whole number {low}-1000")
        if not 0 <= self.retry_backoff_s <= 3600:
            raise InvalidInput("retry_backoff_s must be 0-3600")
        if not isinstance(self.migration, dict):
            raise InvalidInput("migration must be a table of convergence policy settings")

    def backoff_s(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return float(self.retry_backoff_s * 2 ** max(attempt - 1, 0))

    def with_overrides(self, overrides: dict[str, Any]) -> DrainPolicy:
        unknown = set(overrides) - set(asdict(self))
        if unknown:
            raise InvalidInput(f"unknown drain policy settings: {', '.join(sorted(unknown))}")
        try:
            return replace(self, **overrides)
        except TypeError as exc:
            raise InvalidInput(f"invalid drain policy: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DrainPolicy:
        known = {k: v for k, v in data.items() if k in asdict(cls())}
        return cls().with_overrides(known)
