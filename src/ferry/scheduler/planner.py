"""Evacuation planner: where every instance of a host goes, decided jointly.

Units are placed hardest first (fewest eligible hosts, then largest): a hard-affinity group moves
as one unit to one host. Each unit goes to the eligible host whose dominant share (the largest
fraction of any resource it would use) ends lowest, so the drained load spreads evenly; soft group
policies shift that choice by `SOFT_WEIGHT` per member. A unit that fits nowhere may evict a
smaller unit from a host to another host (one level of repair). Last, units on the most loaded
destination move wherever that lowers the maximum, while that helps.

Filters are the scheduler's: static ones (up, enabled, in service, network, compatibility) are
evaluated once per distinct request shape; dynamic ones (capacity, group policies) against the
hosts as the plan has filled them so far.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ferry.scheduler.framework import HostFilter, Scheduler, explain
from ferry.scheduler.model import (
    NOTHING,
    Candidate,
    Group,
    GroupPolicy,
    Request,
    Resources,
)

SOFT_WEIGHT = 0.25  # dominant share a soft-group member on a host is worth
IMPROVE_ROUNDS = 2  # improvement moves, per unit


@dataclass(frozen=True)
class Movable:
    """An instance to move off the host."""

    id: str
    name: str
    need: Resources
    networks: frozenset[str] = frozenset()
    group: str | None = None
    policy: GroupPolicy | None = None
    disk_pool: str | None = None  # where its disk is (Request.disk_pool)


@dataclass(frozen=True)
class Placement:
    instance_id: str
    instance: str
    destination: str


@dataclass(frozen=True)
class Load:
    """A destination's claims before and after the plan, against its capacity."""

    host: str
    capacity: Resources
    before: Resources
    after: Resources
    instances: int

    @property
    def utilization_before(self) -> float:
        return self.before.share_of(self.capacity)

    @property
    def utilization_after(self) -> float:
        return self.after.share_of(self.capacity)


@dataclass(frozen=True)
class Plan:
    source: str
    placements: tuple[Placement, ...]
    unplaced: Mapping[str, str]  # instance name -> why no host can take it
    loads: tuple[Load, ...]

    @property
    def complete(self) -> bool:
        return not self.unplaced


@dataclass
class _Unit:
    members: tuple[Movable, ...]
    request: Request
    eligible: frozenset[str] = frozenset()
    host: str | None = None

    @property
    def group(self) -> str | None:
        return self.members[0].group

    @property
    def label(self) -> str:
        return ", ".join(m.name for m in self.members)


@dataclass
class _Board:
    """The destinations as the plan fills them, indexed by current dominant share."""

    hosts: dict[str, Candidate]
    order: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.order = sorted((h.utilization(), h.name) for h in self.hosts.values())

    def set(self, host: Candidate) -> None:
        old = self.hosts[host.name]
        del self.order[bisect.bisect_left(self.order, (old.utilization(), old.name))]
        bisect.insort(self.order, (host.utilization(), host.name))
        self.hosts[host.name] = host

    def by_load(self) -> Iterator[tuple[float, str]]:
        return iter(self.order)


class _Planner:
    def __init__(self, scheduler: Scheduler, source: Candidate, hosts: Sequence[Candidate]):
        self.source = source
        self.dynamic: tuple[HostFilter, ...] = tuple(f for f in scheduler.filters if not f.static)
        self.scheduler = scheduler
        self.original = {h.name: h for h in hosts if h.name != source.name}
        self.board = _Board(dict(self.original))
        self.reference = _mean_capacity(self.original.values())
        self._eligible: dict[Request, frozenset[str]] = {}

    # -- building units -------------------------------------------------------------------

    def units(self, instances: Sequence[Movable]) -> list[_Unit]:
        placed = {g for h in self.original.values() for g, n in h.members.items() if n > 0}
        bundles: dict[str, list[Movable]] = {}
        units: list[_Unit] = []
        for inst in instances:
            if inst.group and inst.policy is GroupPolicy.AFFINITY:
                bundles.setdefault(inst.group, []).append(inst)
            else:
                units.append(self._unit((inst,), placed))
        units += [self._unit(tuple(members), placed) for members in bundles.values()]
        return units

    def _unit(self, members: tuple[Movable, ...], placed: set[str]) -> _Unit:
        first = members[0]
        need = sum((m.need for m in members), NOTHING)
        networks = frozenset().union(*(m.networks for m in members))
        group = (
            Group(first.group, first.policy, first.group in placed)
            if first.group and first.policy
            else None
        )
        pools = [m.disk_pool for m in members if m.disk_pool is not None]
        disk_pool = min(pools) if pools else None  # one host's members share its storage
        request = Request(need, networks, group, self.source.traits, len(members), disk_pool)
        return _Unit(members, request, self.eligible(request))

    def eligible(self, request: Request) -> frozenset[str]:
        shape = replace(request, need=NOTHING, group=None, count=1)
        if shape not in self._eligible:
            passed = self.scheduler.filter(self.original.values(), shape, static=True)
            self._eligible[shape] = frozenset(h.name for h in passed.hosts)
        return self._eligible[shape]

    # -- choosing -------------------------------------------------------------------------

    def fits(self, host: Candidate, request: Request) -> bool:
        return all(f.passes(host, request) for f in self.dynamic)

    def choose(self, unit: _Unit, exclude: str | None = None) -> tuple[str, float] | None:
        """The eligible host where the unit's placement scores lowest, and that score."""
        request = unit.request
        bonus = SOFT_WEIGHT if _policy(request) is GroupPolicy.SOFT_AFFINITY else 0.0
        best: tuple[str, float] | None = None
        for load, name in self.board.by_load():
            if best is not None and load - bonus >= best[1]:
                break  # a host's share only grows with the unit: no later host can do better
            if name == exclude or name not in unit.eligible:
                continue
            host = self.board.hosts[name]
            if not self.fits(host, request):
                continue
            score = score_of(host, request)
            if best is None or score < best[1]:
                best = (name, score)
        return best

    def put(self, unit: _Unit, name: str) -> None:
        host = self.board.hosts[name]
        self.board.set(host.claimed(unit.request.need, unit.group, unit.request.count))
        unit.host = name

    def take(self, unit: _Unit) -> str:
        name = unit.host
        assert name is not None
        host = self.board.hosts[name]
        self.board.set(host.released(unit.request.need, unit.group, unit.request.count))
        unit.host = None
        return name

    # -- phases ---------------------------------------------------------------------------

    def construct(self, units: list[_Unit]) -> None:
        units.sort(key=lambda u: (len(u.eligible), -self.size(u), u.label))
        for unit in units:
            chosen = self.choose(unit)
            if chosen is not None:
                self.put(unit, chosen[0])
            else:
                self.repair(unit, units)

    def repair(self, unit: _Unit, units: list[_Unit]) -> bool:
        """Make room on one host by moving a placed unit elsewhere."""
        on: dict[str, list[_Unit]] = {}
        for other in units:
            if other.host is not None:
                on.setdefault(other.host, []).append(other)
        for name in sorted(on, key=lambda n: self.board.hosts[n].utilization()):
            if name not in unit.eligible:
                continue
            for other in sorted(on[name], key=self.size, reverse=True):
                self.take(other)
                if self.fits(self.board.hosts[name], unit.request):
                    elsewhere = self.choose(other, exclude=name)
                    if elsewhere is not None:
                        self.put(other, elsewhere[0])
                        self.put(unit, name)
                        return True
                self.put(other, name)
        return False

    def improve(self, units: list[_Unit]) -> None:
        """Move units off the most loaded destination while that lowers the maximum."""
        for _ in range(IMPROVE_ROUNDS * len(units)):
            placed = [u for u in units if u.host is not None]
            if not placed:
                return
            top = max(sorted({u.host for u in placed if u.host}), key=self._share)
            ceiling = self._share(top)
            moved = False
            for unit in sorted((u for u in placed if u.host == top), key=self.size, reverse=True):
                self.take(unit)
                staying = score_of(self.board.hosts[top], unit.request)
                elsewhere = self.choose(unit, exclude=top)
                if elsewhere is not None and elsewhere[1] < staying - 1e-9:
                    target = self.board.hosts[elsewhere[0]]
                    if share_with(target, unit.request) < ceiling - 1e-9:
                        self.put(unit, elsewhere[0])
                        moved = True
                        break
                self.put(unit, top)
            if not moved:
                return

    def size(self, unit: _Unit) -> float:
        return unit.request.need.share_of(self.reference)

    def _share(self, name: str) -> float:
        return self.board.hosts[name].utilization()

    def why_not(self, unit: _Unit) -> str:
        hosts = list(self.board.hosts.values())
        removed = self.scheduler.filter(hosts, unit.request).removed
        return f"no valid host among {len(hosts)} ({explain(removed)})"

    def result(self, units: list[_Unit]) -> Plan:
        placements = sorted(
            (Placement(m.id, m.name, u.host) for u in units if u.host for m in u.members),
            key=lambda p: p.instance,
        )
        counts: dict[str, int] = {}
        for p in placements:
            counts[p.destination] = counts.get(p.destination, 0) + 1
        loads = tuple(
            Load(n, self.original[n].capacity, self.original[n].used, self.board.hosts[n].used, c)
            for n, c in sorted(counts.items())
        )
        unplaced = {m.name: self.why_not(u) for u in units if u.host is None for m in u.members}
        return Plan(self.source.name, tuple(placements), dict(sorted(unplaced.items())), loads)


def plan_evacuation(
    scheduler: Scheduler,
    source: Candidate,
    instances: Sequence[Movable],
    hosts: Sequence[Candidate],
) -> Plan:
    """Where each of `instances` (all on `source`) goes among `hosts`; instances no host can
    take are listed with the reason."""
    planner = _Planner(scheduler, source, hosts)
    units = planner.units(instances)
    planner.construct(units)
    planner.improve(units)
    for unit in units:
        if unit.host is None and (chosen := planner.choose(unit)) is not None:
            planner.put(unit, chosen[0])
    return planner.result(units)


def _policy(request: Request) -> GroupPolicy | None:
    return request.group.policy if request.group else None


def score_of(host: Candidate, request: Request) -> float:
    """The host's dominant share with the request on it, moved by soft group policies."""
    return share_with(host, request) + _soft(host, request)


def share_with(host: Candidate, request: Request) -> float:
    return (host.used + request.need).share_of(host.capacity)


def _soft(host: Candidate, request: Request) -> float:
    group = request.group
    if group is None:
        return 0.0
    members = host.members.get(group.name, 0)
    if group.policy is GroupPolicy.SOFT_ANTI_AFFINITY:
        return SOFT_WEIGHT * members
    if group.policy is GroupPolicy.SOFT_AFFINITY:
        return -SOFT_WEIGHT if members else 0.0
    return 0.0


def _mean_capacity(hosts: Iterable[Candidate]) -> Resources:
    rows = list(hosts)
    if not rows:
        return Resources(1, 1, 1)
    n = len(rows)
    return Resources(
        max(1, math.ceil(sum(h.capacity.vcpus for h in rows) / n)),
        max(1, math.ceil(sum(h.capacity.ram_mb for h in rows) / n)),
        max(1, math.ceil(sum(h.capacity.disk_gb for h in rows) / n)),
    )
