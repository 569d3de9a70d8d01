"""A scheduler from configuration: which optional filters run in which order, and each weigher's
multiplier. Unknown names are refused with the known ones listed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ferry.scheduler import filters, weighers
from ferry.scheduler.framework import Scheduler


def build(
    enabled_filters: Sequence[str] | None = None,
    multipliers: Mapping[str, float] | None = None,
) -> Scheduler:
    names = list(filters.DEFAULT if enabled_filters is None else enabled_filters)
    unknown = [n for n in names if n not in filters.OPTIONAL]
    if unknown:
        raise ValueError(
            f"unknown scheduler filter(s) {', '.join(unknown)}; known: "
            f"{', '.join(filters.OPTIONAL)} (host_up, enabled and in_service always run)"
        )
    if len(set(names)) != len(names):
        raise ValueError("a scheduler filter is listed twice")
    overrides = dict(multipliers or {})
    unknown = [n for n in overrides if n not in weighers.ALL]
    if unknown:
        raise ValueError(
            f"unknown scheduler weigher(s) {', '.join(unknown)}; known: {', '.join(weighers.ALL)}"
        )
    return Scheduler(
        [*filters.MANDATORY, *(filters.OPTIONAL[n] for n in names)],
        [(w, overrides.get(name, w.default_multiplier)) for name, w in weighers.ALL.items()],
    )
