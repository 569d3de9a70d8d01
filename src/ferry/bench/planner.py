"""`ferry bench planner`: the evacuation planner on synthetic clusters, against a one-at-a-time
greedy loop (what a client-side evacuation does) run on the same cluster, and both against a
lower bound on how evenly the drained load can spread.

A cluster is seeded, so a run is reproducible: hosts of mixed hardware with uneven pre-existing
load, a few down, disabled, in maintenance or with an older QEMU, a second network on only part
of them; one source host in maintenance holds instances of mixed flavors, some on that second
network. Nothing here does I/O.

Balance is the largest dominant share (`Resources.share_of`) among the hosts that received an
instance, divided by the water-filling level: for each resource the level L at which spreading a
divisible load perfectly over the eligible hosts (each filled from its own pre-existing use up to
L x its capacity) holds the drained demand, the largest over resources. No placement of every
instance ends below it, so then the ratio is at least 1; instances are not divisible, so it is
rarely 1.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ferry.scheduler.framework import NoValidHost, Scheduler
from ferry.scheduler.model import NOTHING, Candidate, Request, Resources, Traits
from ferry.scheduler.planner import Movable, plan_evacuation

GIB = 1024
RESOURCES = ("vcpus", "ram_mb", "disk_gb")
FLAVORS = (  # vCPU, RAM, disk: 1/2/4/8 vCPU with 2/4/8/16 GiB
    Resources(1, 2 * GIB, 20),
    Resources(2, 4 * GIB, 40),
    Resources(4, 8 * GIB, 80),
    Resources(8, 16 * GIB, 160),
)
HARDWARE = (  # capacity after allocation ratios and reservations
    Resources(48, 192 * GIB, 2_000),
    Resources(96, 384 * GIB, 4_000),
    Resources(128, 256 * GIB, 4_000),
    Resources(64, 512 * GIB, 3_000),
    Resources(192, 768 * GIB, 8_000),
)
NETWORK = "prod"  # on every host, every instance has a port on it
SECOND_NETWORK = "storage"  # on part of the hosts only
TRAITS = Traits("Cascadelake-Server", "pc-q35-8.2", "8.2.2")
OLD_TRAITS = Traits("Cascadelake-Server", "pc-q35-8.2", "7.2.0")  # cannot receive from 8.2.2
DEFAULT_HOSTS = (1_000, 10_000)
DEFAULT_INSTANCES = 200
DEFAULT_SEED = 1
Say = Callable[[str], None]


@dataclass(frozen=True)
class Spec:
    """A synthetic cluster: `hosts` destinations whose pre-existing dominant share is drawn
    from `load`, and `instances` on the source; the shares are fractions of hosts or instances."""

    name: str
    hosts: int
    instances: int
    load: tuple[float, float]
    seed: int = DEFAULT_SEED
    down: float = 0.005
    disabled: float = 0.005
    maintenance: float = 0.01
    old_qemu: float = 0.01
    second_network_hosts: float = 0.4
    second_network_instances: float = 0.25
    roomy: bool = True  # every instance is expected to find a host


def specs(
    hosts: Sequence[int] = DEFAULT_HOSTS,
    instances: int = DEFAULT_INSTANCES,
    seed: int = DEFAULT_SEED,
) -> list[Spec]:
    """Large clusters (uneven load, 5-75 %) of each size, then a small one near 60 %, where
    the drained load is a large part of what is free and balance matters more."""
    large = [Spec(f"spread-{n}", n, instances, (0.05, 0.75), seed) for n in hosts]
    return [*large, Spec("tight-20", 20, 40, (0.55, 0.65), seed, roomy=False)]


@dataclass(frozen=True)
class Cluster:
    source: Candidate
    hosts: tuple[Candidate, ...]  # the destinations, then the source
    instances: tuple[Movable, ...]

    @property
    def demand(self) -> Resources:
        return sum((m.need for m in self.instances), NOTHING)


def build_cluster(spec: Spec) -> Cluster:
    """The cluster `spec` describes; the same spec always gives the same cluster. The instances
    depend only on their count and the seed, so clusters of different sizes drain the same."""
    instances = _instances(spec, random.Random(f"{spec.seed}:instances:{spec.instances}"))
    hosts = _hosts(spec, random.Random(f"{spec.seed}:hosts:{spec.name}:{spec.hosts}"))
    demand = sum((m.need for m in instances), NOTHING)
    source = Candidate(
        name="source",
        up=True,
        enabled=True,
        in_service=False,  # draining
        capacity=_scaled(demand, 1.25),
        used=demand,
        networks=frozenset({NETWORK, SECOND_NETWORK}),
        traits=TRAITS,
    )
    return Cluster(source, (*hosts, source), tuple(instances))


def _instances(spec: Spec, rng: random.Random) -> list[Movable]:
    out = []
    for i in range(spec.instances):
        networks = {NETWORK}
        if rng.random() < spec.second_network_instances:
            networks.add(SECOND_NETWORK)
        out.append(
            Movable(f"id-{i:04d}", f"inst-{i:04d}", rng.choice(FLAVORS), frozenset(networks))
        )
    return out


def _hosts(spec: Spec, rng: random.Random) -> list[Candidate]:
    n = spec.hosts
    indices = list(range(n))
    down, disabled, maintenance, old = (
        set(rng.sample(indices, _few(share, n)))
        for share in (spec.down, spec.disabled, spec.maintenance, spec.old_qemu)
    )
    second = set(rng.sample(indices, round(spec.second_network_hosts * n)))
    hosts = []
    for i in range(n):
        capacity = rng.choice(HARDWARE)
        level = rng.uniform(*spec.load)
        used = Resources(*(_used(getattr(capacity, r), level, rng) for r in RESOURCES))
        hosts.append(
            Candidate(
                name=f"host-{i:05d}",
                up=i not in down,
                enabled=i not in disabled,
                in_service=i not in maintenance,
                capacity=capacity,
                used=used,
                networks=frozenset({NETWORK, SECOND_NETWORK} if i in second else {NETWORK}),
                traits=OLD_TRAITS if i in old else TRAITS,
            )
        )
    return hosts


def _few(share: float, n: int) -> int:
    """At least one host of each kind, so every filter has something to remove."""
    return min(n, max(1, round(share * n)))


def _used(capacity: int, level: float, rng: random.Random) -> int:
    """One resource's use: the host's level, each resource +-20 % of it, never above 95 %."""
    return int(capacity * min(0.95, level * rng.uniform(0.8, 1.2)))


def _scaled(r: Resources, factor: float) -> Resources:
    return Resources(*(max(1, int(getattr(r, name) * factor)) for name in RESOURCES))


# -- the lower bound ------------------------------------------------------------------------


def water_level(hosts: Iterable[tuple[int, int]], demand: float) -> float:
    """The smallest L with sum over `hosts` (capacity, used) of max(0, L*capacity - used) >=
    `demand`: the level that perfectly spread divisible load reaches. Hosts without capacity
    take nothing; with no host at all and some demand, infinity."""
    if demand <= 0:
        return 0.0
    rows = sorted((used / cap, cap, used) for cap, used in hosts if cap > 0)
    total_cap = total_used = 0
    for i, (_, cap, used) in enumerate(rows):
        total_cap += cap
        total_used += used
        level = (demand + total_used) / total_cap
        if i + 1 == len(rows) or level <= rows[i + 1][0]:
            return level
    return float("inf")


def eligible_hosts(scheduler: Scheduler, cluster: Cluster) -> list[Candidate]:
    """The hosts other than the source that pass the static filters (up, enabled, in service,
    networks, compatibility) for at least one of the instances."""
    hosts = [h for h in cluster.hosts if h.name != cluster.source.name]
    names: set[str] = set()
    for shape in {_request(m, cluster.source.traits, NOTHING) for m in cluster.instances}:
        names.update(h.name for h in scheduler.filter(hosts, shape, static=True).hosts)
    return [h for h in hosts if h.name in names]


def lower_bound(hosts: Sequence[Candidate], demand: Resources) -> float:
    """No placement of `demand` on `hosts` ends with every receiving host's dominant share
    below this: the largest over resources of their water-filling levels."""
    return max(
        water_level(
            ((getattr(h.capacity, r), getattr(h.used, r)) for h in hosts), getattr(demand, r)
        )
        for r in RESOURCES
    )


# -- the two placements ---------------------------------------------------------------------


def _request(instance: Movable, traits: Traits | None, need: Resources | None = None) -> Request:
    return Request(instance.need if need is None else need, instance.networks, None, traits)


def plan(scheduler: Scheduler, cluster: Cluster) -> dict[str, str]:
    """Instance name -> destination, by the evacuation planner."""
    result = plan_evacuation(scheduler, cluster.source, cluster.instances, cluster.hosts)
    return {p.instance: p.destination for p in result.placements}


def greedy(scheduler: Scheduler, cluster: Cluster) -> dict[str, str]:
    """Instance name -> destination, one at a time in name order: each goes to the host the
    scheduler selects among the hosts as the earlier ones left them."""
    hosts = list(cluster.hosts)
    index = {h.name: i for i, h in enumerate(hosts)}
    chosen: dict[str, str] = {}
    for instance in sorted(cluster.instances, key=lambda m: m.name):
        try:
            host = scheduler.select(hosts, _request(instance, cluster.source.traits))
        except NoValidHost:
            continue
        hosts[index[host.name]] = host.claimed(instance.need)
        chosen[instance.name] = host.name
    return chosen


def after(cluster: Cluster, placements: Mapping[str, str]) -> dict[str, Candidate]:
    """The hosts that received instances, with them claimed."""
    hosts = {h.name: h for h in cluster.hosts}
    received: dict[str, Candidate] = {}
    for instance in cluster.instances:
        name = placements.get(instance.name)
        if name is not None:
            received[name] = received.get(name, hosts[name]).claimed(instance.need)
    return received


# -- measuring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    seconds: float  # the fastest of the runs
    placed: int
    unplaced: int
    destinations: int  # hosts that received at least one instance
    max_utilization: float  # the largest dominant share among them
    balance: float  # max_utilization / the lower bound


@dataclass(frozen=True)
class Report:
    spec: Spec
    eligible: int
    demand: Resources
    bound: float
    planner: Outcome
    greedy: Outcome

    @property
    def time_ratio(self) -> float:
        """Planner time / greedy time."""
        return self.planner.seconds / self.greedy.seconds


Placer = Callable[[Scheduler, Cluster], dict[str, str]]


def timed(
    placer: Placer, scheduler: Scheduler, cluster: Cluster, runs: int
) -> tuple[dict[str, str], float]:
    """The placements and the fastest of `runs` wall times (each run starts from the cluster
    as built: placers do not modify it)."""
    best = float("inf")
    placements: dict[str, str] = {}
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        placements = placer(scheduler, cluster)
        best = min(best, time.perf_counter() - started)
    return placements, best


def outcome(
    cluster: Cluster, placements: Mapping[str, str], seconds: float, bound: float
) -> Outcome:
    received = after(cluster, placements)
    top = max((h.utilization() for h in received.values()), default=0.0)
    return Outcome(
        seconds=seconds,
        placed=len(placements),
        unplaced=len(cluster.instances) - len(placements),
        destinations=len(received),
        max_utilization=top,
        balance=top / bound if bound > 0 else float("inf"),
    )


def measure(scheduler: Scheduler, spec: Spec, runs: int = 1) -> Report:
    cluster = build_cluster(spec)
    eligible = eligible_hosts(scheduler, cluster)
    bound = lower_bound(eligible, cluster.demand)
    planned, plan_s = timed(plan, scheduler, cluster, runs)
    greedy_placed, greedy_s = timed(greedy, scheduler, cluster, runs)
    return Report(
        spec=spec,
        eligible=len(eligible),
        demand=cluster.demand,
        bound=bound,
        planner=outcome(cluster, planned, plan_s, bound),
        greedy=outcome(cluster, greedy_placed, greedy_s, bound),
    )


def run(scheduler: Scheduler, scenarios: Sequence[Spec], say: Say, runs: int = 1) -> list[Report]:
    reports = []
    for spec in scenarios:
        reports.append(report := measure(scheduler, spec, runs))
        say(
            f"{spec.name}: planner {report.planner.seconds * 1000:.1f} ms, greedy "
            f"{report.greedy.seconds * 1000:.1f} ms"
        )
    return reports


def to_json(reports: Sequence[Report]) -> list[dict[str, Any]]:
    return [
        {
            "scenario": asdict(r.spec),
            "eligible_hosts": r.eligible,
            "drained": asdict(r.demand),
            "lower_bound": r.bound,
            "planner": asdict(r.planner),
            "greedy": asdict(r.greedy),
            "time_ratio": r.time_ratio,
        }
        for r in reports
    ]
