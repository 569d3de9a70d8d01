"""Convergence policy of a live migration, and the decisions it implies. Pure.

Defaults (overridable per request and by configuration):
- max_bandwidth_mib: 1000 MiB/s, set explicitly on every migration so QEMU's silent 128 MiB/s
  default never applies; the link is usually the real limit.
- downtime ladder: start at 30 ms; each time `stall_passes` more passes go by without the
  migration completing, step up to the next limit (100, 300, 1000, 2000 ms), never past the last.
  QEMU switches over as soon as what is left fits in the limit, and sends all of it with the
  guest paused, so the first step is what an idle guest's blackout is made of: at 300 ms an
  idle 128 MiB TCG guest paused 107 ms, at 30 ms or less 7-66 ms (same run, loopback). Only a
  guest that does not converge climbs.
- auto_converge on: QEMU throttles a guest that dirties memory faster than the link.
- postcopy off: when on, the capability is enabled on both ends and the timeout action may switch.
- completion timeout: `timeout_s_per_gib` per GiB of guest memory (at least `min_timeout_s`).
- no-progress timeout: `no_progress_s` without a byte sent (a stalled or cut stream) ->
  `on_timeout` (abort, or switch to post-copy when enabled); a stream that moves but never
  converges ends by the completion timeout instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from ferry.domain.errors import InvalidInput


class TimeoutAction(StrEnum):
    ABORT = "abort"
    POSTCOPY = "postcopy"


@dataclass(frozen=True)
class ConvergencePolicy:
    max_bandwidth_mib: int = 1000
    downtime_ladder_ms: tuple[int, ...] = (30, 100, 300, 1000, 2000)
    stall_passes: int = 3
    auto_converge: bool = True
    postcopy: bool = False
    timeout_s_per_gib: float = 600.0
    min_timeout_s: float = 120.0
    no_progress_s: float = 60.0
    on_timeout: TimeoutAction = TimeoutAction.ABORT
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.max_bandwidth_mib <= 100_000:
            raise InvalidInput("max_bandwidth_mib must be 1-100000")
        ladder = self.downtime_ladder_ms
        if (
            not ladder
            or any(not 1 <= step <= 60_000 for step in ladder)
            or list(ladder) != sorted(ladder)
        ):
            raise InvalidInput("downtime_ladder_ms must be rising steps of 1-60000 ms")
        if self.on_timeout is TimeoutAction.POSTCOPY and not self.postcopy:
            raise InvalidInput("on_timeout=postcopy needs postcopy enabled")
        if self.stall_passes < 1 or self.no_progress_s <= 0 or self.timeout_s_per_gib <= 0:
            raise InvalidInput("stall_passes, no_progress_s and timeout_s_per_gib must be > 0")

    def timeout_s(self, ram_mb: int) -> float:
        return max(self.min_timeout_s, self.timeout_s_per_gib * ram_mb / 1024)

    def next_downtime(self, current_ms: int) -> int | None:
        """The next step of the ladder above `current_ms`, or None at the top."""
        return next((step for step in self.downtime_ladder_ms if step > current_ms), None)

    def with_overrides(self, overrides: dict[str, Any]) -> ConvergencePolicy:
        known = set(asdict(self)) - {"extra"}
        unknown = set(overrides) - known
        if unknown:
            raise InvalidInput(f"unknown policy settings: {', '.join(sorted(unknown))}")
        values = dict(overrides)
        if "downtime_ladder_ms" in values:
            values["downtime_ladder_ms"] = tuple(values["downtime_ladder_ms"])
        if "on_timeout" in values:
            try:
                values["on_timeout"] = TimeoutAction(values["on_timeout"])
            except ValueError as exc:
                raise InvalidInput("on_timeout is abort or postcopy") from exc
        try:
            return replace(self, **values)
        except TypeError as exc:
            raise InvalidInput(f"invalid policy: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        data["downtime_ladder_ms"] = list(self.downtime_ladder_ms)
        data["on_timeout"] = self.on_timeout.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConvergencePolicy:
        return cls().with_overrides(data)
