"""Filters and weighers, the Nova pattern: a filter answers `passes(host, request)`; a weigher
returns a raw number that the framework normalizes over the candidates (to 0..1) and multiplies.
The hosts each filter removed are counted, so "no valid host" explains itself."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ferry.scheduler.model import Candidate, Request


class HostFilter(Protocol):
    @property
    def name(self) -> str: ...  # as named in configuration

    @property
    def reason(self) -> str: ...  # why a host was removed, as operators read it

    @property
    def static(self) -> bool: ...  # depends only on the host's fixed facts, not on claims

    def passes(self, host: Candidate, request: Request) -> bool: ...


class HostWeigher(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def default_multiplier(self) -> float: ...

    def raw(self, host: Candidate, request: Request) -> float: ...


class NoValidHost(Exception):
    def __init__(self, removed: Mapping[str, int], total: int) -> None:
        super().__init__(f"no valid host among {total} ({explain(removed)})")
        self.removed = dict(removed)
        self.total = total


def explain(removed: Mapping[str, int]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in removed.items() if n) or "no hosts"


@dataclass(frozen=True)
class Filtered:
    hosts: list[Candidate]
    removed: dict[str, int]


class Scheduler:
    """Filters in order, then weighers with their multipliers."""

    def __init__(
        self, filters: Sequence[HostFilter], weighers: Sequence[tuple[HostWeigher, float]]
    ) -> None:
        self.filters = tuple(filters)
        self.weighers = tuple(weighers)

    def filter(
        self, hosts: Iterable[Candidate], request: Request, *, static: bool | None = None
    ) -> Filtered:
        """The hosts that pass every filter (only the static or dynamic ones if asked)."""
        remaining = list(hosts)
        removed: dict[str, int] = {}
        for flt in self.filters:
            if static is not None and flt.static is not static:
                continue
            kept = [h for h in remaining if flt.passes(h, request)]
            removed[flt.reason] = removed.get(flt.reason, 0) + len(remaining) - len(kept)
            remaining = kept
        return Filtered(remaining, removed)

    def passes(self, host: Candidate, request: Request, *, static: bool | None = None) -> bool:
        return all(
            flt.passes(host, request)
            for flt in self.filters
            if static is None or flt.static is static
        )

    def weigh(self, hosts: Sequence[Candidate], request: Request) -> list[float]:
        """Each host's weight: the sum over weighers of multiplier x raw value normalized to
        0..1 over these hosts (all equal: 0)."""
        totals = [0.0] * len(hosts)
        for weigher, multiplier in self.weighers:
            if not multiplier:
                continue
            raw = [weigher.raw(h, request) for h in hosts]
            low, high = min(raw, default=0.0), max(raw, default=0.0)
            if high == low:
                continue
            for i, value in enumerate(raw):
                totals[i] += multiplier * (value - low) / (high - low)
        return totals

    def select(self, hosts: Sequence[Candidate], request: Request) -> Candidate:
        """The best host for `request`, or NoValidHost saying how many hosts each filter
        removed. Ties go to the first name in order, so decisions are reproducible."""
        passed = self.filter(hosts, request)
        if not passed.hosts:
            raise NoValidHost(passed.removed, len(hosts))
        weights = self.weigh(passed.hosts, request)
        best = min(range(len(weights)), key=lambda i: (-weights[i], passed.hosts[i].name))
        return passed.hosts[best]
