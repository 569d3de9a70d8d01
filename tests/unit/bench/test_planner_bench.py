"""The planner benchmark: its lower bound on small hand-checked cases and against every
placement of tiny clusters, the synthetic clusters' reproducibility, and that reports agree
with themselves and with the planner's own account."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest
from typer.testing import CliRunner

from ferry.bench.planner import (
    NETWORK,
    SECOND_NETWORK,
    TRAITS,
    Cluster,
    Placer,
    Spec,
    after,
    build_cluster,
    eligible_hosts,
    greedy,
    lower_bound,
    measure,
    plan,
    specs,
    to_json,
    water_level,
)
from ferry.cli.main import app
from ferry.scheduler.framework import Scheduler
from ferry.scheduler.model import NOTHING, Candidate, Request, Resources
from ferry.scheduler.planner import Movable, plan_evacuation
from ferry.scheduler.setup import build

SCHEDULER: Scheduler = build()
SMALL = Spec("spread-300", 300, 60, (0.05, 0.75), seed=7)


# -- water_level ----------------------------------------------------------------------------


def test_one_empty_host_fills_to_demand_over_capacity() -> None:
    assert water_level([(10, 0)], 3) == pytest.approx(0.3)


def test_a_host_already_above_the_level_takes_nothing() -> None:
    # hosts at 0 % and 50 %: 3 units raise the empty one to 30 %, below the other
    assert water_level([(10, 0), (10, 5)], 3) == pytest.approx(0.3)
    assert water_level([(10, 5), (10, 0)], 5) == pytest.approx(0.5)  # exactly reaches it


def test_past_the_next_host_both_fill_together() -> None:
    # 10 units: 5 lift the empty host to 50 %, the other 5 spread over both: 20 used of 20
    assert water_level([(10, 0), (10, 5)], 15) == pytest.approx(1.0)
    assert water_level([(10, 0), (10, 5)], 7) == pytest.approx(0.6)  # (7 + 5) / 20


def test_uneven_capacities_fill_to_one_level() -> None:
    assert water_level([(10, 0), (30, 0)], 20) == pytest.approx(0.5)
    # 40 % and 10 % used: (12 + 4 + 3) / 40 = 0.475, above both
    assert water_level([(10, 4), (30, 3)], 12) == pytest.approx(0.475)


def test_overloaded_and_capacityless_hosts_take_nothing() -> None:
    assert water_level([(10, 12), (10, 0), (0, 0)], 5) == pytest.approx(0.5)


def test_no_demand_is_level_zero_and_no_host_is_infinite() -> None:
    assert water_level([(10, 5)], 0) == 0.0
    assert math.isinf(water_level([], 1))
    assert math.isinf(water_level([(0, 0)], 1))


def _host(name: str, capacity: Resources, used: Resources) -> Candidate:
    return Candidate(name, True, True, True, capacity, used, frozenset({NETWORK}), TRAITS)


def test_the_bound_is_the_largest_level_over_resources() -> None:
    cap = Resources(10, 100, 1000)
    hosts = [_host("a", cap, Resources(5, 0, 0)), _host("b", cap, Resources(0, 50, 0))]
    # vCPU: b alone would reach (10 + 0) / 10 = 1.0 > a's 0.5, so both: (10 + 5) / 20 = 0.75;
    # RAM: a alone reaches 20 / 100 = 0.2, below b's 0.5; disk: nothing drained
    assert lower_bound(hosts, Resources(10, 20, 0)) == pytest.approx(0.75)


def _tiny_cluster(seed: int) -> Cluster:
    rng = random.Random(seed)
    hosts = [
        _host(
            f"h{i}",
            Resources(8, 16_384, 200),
            Resources(rng.randint(0, 5), rng.randint(0, 10_000), rng.randint(0, 100)),
        )
        for i in range(3)
    ]
    instances = [
        Movable(f"id{k}", f"i{k}", Resources(v, v * rng.choice((1024, 2048)), 10 * v))
        for k, v in enumerate(rng.choices((1, 2, 3), k=4))
    ]
    need = sum((m.need for m in instances), NOTHING)
    source = Candidate("source", True, True, False, need, need, frozenset({NETWORK}), TRAITS)
    return Cluster(source, (*hosts, source), tuple(instances))


@pytest.mark.parametrize("seed", range(20))
def test_no_placement_of_every_instance_ends_below_the_bound(seed: int) -> None:
    cluster = _tiny_cluster(seed)
    hosts = cluster.hosts[:-1]
    bound = lower_bound(hosts, cluster.demand)
    best = math.inf
    for choice in itertools.product(hosts, repeat=len(cluster.instances)):
        placements = {m.name: h.name for m, h in zip(cluster.instances, choice, strict=True)}
        best = min(best, max(h.utilization() for h in after(cluster, placements).values()))
    assert best >= bound - 1e-9


# -- the synthetic clusters -----------------------------------------------------------------


def test_a_spec_always_builds_the_same_cluster() -> None:
    assert build_cluster(SMALL) == build_cluster(SMALL)
    other = build_cluster(Spec(SMALL.name, SMALL.hosts, SMALL.instances, SMALL.load, seed=8))
    assert other.hosts != build_cluster(SMALL).hosts
    assert other.instances != build_cluster(SMALL).instances


def test_clusters_of_any_size_drain_the_same_instances() -> None:
    large, bigger, tight = specs((300, 600), 50, seed=3)
    assert build_cluster(large).instances == build_cluster(bigger).instances
    assert len(build_cluster(large).instances) == 50
    assert (tight.hosts, tight.instances, tight.roomy) == (20, 40, False)


def test_clusters_have_what_each_filter_removes() -> None:
    cluster = build_cluster(SMALL)
    hosts = cluster.hosts[:-1]
    assert cluster.hosts[-1] is cluster.source and not cluster.source.in_service
    assert sum(not h.up for h in hosts) >= 1
    assert sum(not h.enabled for h in hosts) >= 1
    assert sum(not h.in_service for h in hosts) >= 1
    assert sum(h.traits != TRAITS for h in hosts) >= 1
    assert 0 < sum(SECOND_NETWORK in h.networks for h in hosts) < len(hosts)
    assert 0 < sum(SECOND_NETWORK in m.networks for m in cluster.instances) < SMALL.instances
    assert len({h.capacity for h in hosts}) > 1  # mixed hardware
    assert len({m.need for m in cluster.instances}) > 1  # mixed flavors
    assert all(h.used.share_of(h.capacity) <= 0.95 for h in hosts)


def test_eligible_hosts_pass_the_static_filters_for_some_instance() -> None:
    cluster = build_cluster(SMALL)
    eligible = eligible_hosts(SCHEDULER, cluster)
    assert all(h.up and h.enabled and h.in_service and h.traits == TRAITS for h in eligible)
    assert cluster.source not in eligible
    assert any(SECOND_NETWORK not in h.networks for h in eligible)  # enough for most instances
    removed = [h for h in cluster.hosts[:-1] if h not in eligible]
    assert removed and all(
        not (h.up and h.enabled and h.in_service) or h.traits != TRAITS for h in removed
    )


# -- placements and reports -----------------------------------------------------------------


@pytest.mark.parametrize("placer", [plan, greedy])
def test_both_placers_respect_filters_and_capacity(placer: Placer) -> None:
    cluster = build_cluster(SMALL)
    eligible = {h.name: h for h in eligible_hosts(SCHEDULER, cluster)}
    placements = placer(SCHEDULER, cluster)
    assert len(placements) == SMALL.instances
    for instance in cluster.instances:
        assert instance.networks <= eligible[placements[instance.name]].networks
    for host in after(cluster, placements).values():
        assert all(getattr(host.free(), r) >= 0 for r in ("vcpus", "ram_mb", "disk_gb"))


def test_greedy_takes_the_schedulers_pick_one_at_a_time() -> None:
    cluster = build_cluster(SMALL)
    placements = greedy(SCHEDULER, cluster)
    first = min(cluster.instances, key=lambda m: m.name)
    request = Request(first.need, first.networks, None, cluster.source.traits)
    assert placements[first.name] == SCHEDULER.select(cluster.hosts, request).name


def test_a_report_agrees_with_itself_and_the_planner() -> None:
    report = measure(SCHEDULER, SMALL)
    cluster = build_cluster(SMALL)
    assert report.demand == cluster.demand
    assert report.bound == pytest.approx(
        lower_bound(eligible_hosts(SCHEDULER, cluster), cluster.demand)
    )
    for outcome in (report.planner, report.greedy):
        assert (outcome.placed, outcome.unplaced) == (SMALL.instances, 0)
        assert 0 < outcome.destinations <= report.eligible
        assert outcome.balance == pytest.approx(outcome.max_utilization / report.bound)
        assert outcome.balance >= 1 - 1e-9
        assert outcome.seconds > 0
    assert report.time_ratio == pytest.approx(report.planner.seconds / report.greedy.seconds)
    own = plan_evacuation(SCHEDULER, cluster.source, cluster.instances, cluster.hosts)
    assert report.planner.max_utilization == pytest.approx(
        max(load.utilization_after for load in own.loads)
    )
    assert report.planner.destinations == len(own.loads)


def test_the_tight_cluster_report_is_consistent() -> None:
    tight = specs((), seed=1)[0]
    report = measure(SCHEDULER, tight)
    for outcome in (report.planner, report.greedy):
        assert outcome.placed + outcome.unplaced == tight.instances
        if not outcome.unplaced:
            assert outcome.balance >= 1 - 1e-9


def test_json_report_is_strict_json() -> None:
    data = to_json([measure(SCHEDULER, Spec("spread-50", 50, 10, (0.05, 0.75)))])
    text = json.dumps(data, allow_nan=False)
    row = json.loads(text)[0]
    assert row["scenario"]["hosts"] == 50
    assert set(row) >= {"eligible_hosts", "drained", "lower_bound", "planner", "greedy"}
    assert row["time_ratio"] == pytest.approx(row["planner"]["seconds"] / row["greedy"]["seconds"])


def test_the_command_prints_json_for_each_scenario() -> None:
    args = ["bench", "planner", "--hosts", "40,80", "--instances", "8", "--runs", "1"]
    result = CliRunner().invoke(app, [*args, "-f", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["scenario"]["name"] for r in rows] == ["spread-40", "spread-80", "tight-20"]
    assert all(r["planner"]["placed"] == 8 for r in rows[:2])


def test_the_command_refuses_bad_host_counts() -> None:
    result = CliRunner().invoke(app, ["bench", "planner", "--hosts", "10,x"])
    assert result.exit_code != 0
    assert "comma-separated" in result.output
