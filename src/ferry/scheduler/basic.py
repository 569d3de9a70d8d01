"""Basic placement: filters (up, enabled, not in maintenance, capacity, network) and one weigher
(most free RAM, so load spreads). Each filter says why it removed a host, so "no valid host"
explains itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Resources:
    vcpus: int
    ram_mb: int
    disk_gb: int


@dataclass(frozen=True)
class Candidate:
    """A host as the scheduler sees it: capacity after ratios and reservations, and use."""

    name: str
    up: bool
    enabled: bool
    in_service: bool
    capacity: Resources
    used: Resources
    networks: frozenset[str] = field(default_factory=frozenset)

    def free(self) -> Resources:
        return Resources(
            self.capacity.vcpus - self.used.vcpus,
            self.capacity.ram_mb - self.used.ram_mb,
            self.capacity.disk_gb - self.used.disk_gb,
        )


@dataclass(frozen=True)
class Request:
    need: Resources
    networks: frozenset[str] = field(default_factory=frozenset)


Filter = Callable[[Candidate, Request], bool]


def _fits(host: Candidate, request: Request) -> bool:
    free = host.free()
    need = request.need
    return need.vcpus <= free.vcpus and need.ram_mb <= free.ram_mb and need.disk_gb <= free.disk_gb


FILTERS: list[tuple[str, Filter]] = [
    ("host down", lambda h, r: h.up),
    ("host disabled", lambda h, r: h.enabled),
    ("host in maintenance", lambda h, r: h.in_service),
    ("network not on host", lambda h, r: r.networks <= h.networks),
    ("not enough free vCPU, RAM or disk", _fits),
]


class NoValidHost(Exception):
    def __init__(self, removed: dict[str, int], total: int) -> None:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in removed.items() if count)
        super().__init__(f"no valid host among {total} ({reasons or 'no hosts'})")
        self.removed = removed


def select(hosts: Sequence[Candidate], request: Request) -> Candidate:
    """The best host for `request`, or NoValidHost saying how many hosts each filter removed."""
    remaining = list(hosts)
    removed: dict[str, int] = {}
    for reason, passes in FILTERS:
        kept = [h for h in remaining if passes(h, request)]
        removed[reason] = len(remaining) - len(kept)
        remaining = kept
    if not remaining:
        raise NoValidHost(removed, len(hosts))
    return max(remaining, key=lambda h: (h.free().ram_mb / max(h.capacity.ram_mb, 1), h.name))
