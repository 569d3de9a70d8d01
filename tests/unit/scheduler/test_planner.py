"""The evacuation planner: joint placement, balance, groups, reasons, and properties that hold
for any cluster (hypothesis)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.scheduler.model import Candidate, GroupPolicy, Request, Resources
from ferry.scheduler.planner import Movable, Plan, plan_evacuation
from ferry.scheduler.setup import build
from tests.unit.scheduler.support import BIG, NONE, TRAITS, host

SCHEDULER = build()
SOURCE = host("source", in_service=False)
GIB = 1024


def vm(
    name: str,
    ram_gib: int = 2,
    vcpus: int = 1,
    group: str | None = None,
    policy: GroupPolicy | None = None,
) -> Movable:
    need = Resources(vcpus, ram_gib * GIB, 10)
    return Movable(f"id-{name}", name, need, frozenset({"prod"}), group, policy)


def plan(instances: list[Movable], hosts: list[Candidate]) -> Plan:
    return plan_evacuation(SCHEDULER, SOURCE, instances, [SOURCE, *hosts])


def where(result: Plan) -> dict[str, str]:
    return {p.instance: p.destination for p in result.placements}


def test_equal_instances_spread_evenly() -> None:
    hosts = [host(f"h{n}") for n in range(4)]
    result = plan([vm(f"vm{n}") for n in range(8)], hosts)
    assert result.complete
    assert Counter(where(result).values()) == {"h0": 2, "h1": 2, "h2": 2, "h3": 2}
    assert {load.host for load in result.loads} == {"h0", "h1", "h2", "h3"}
    assert all(load.after.ram_mb == 4 * GIB for load in result.loads)


def test_the_fuller_host_gets_less() -> None:
    busy = host("busy", used=Resources(0, 16 * GIB, 0))
    idle = host("idle")
    result = plan([vm(f"vm{n}") for n in range(8)], [busy, idle])
    counts = Counter(where(result).values())
    assert counts["idle"] > counts["busy"]
    assert max(load.utilization_after for load in result.loads) <= 24 / 32


def test_largest_first_places_what_one_at_a_time_cannot() -> None:
    """Two hosts with 8 GiB free each. In name order a greedy client puts the 4 GiB instances on
    different hosts and then has no room for the 8 GiB one; the plan places all three."""
    hosts = [host(n, capacity=Resources(16, 8 * GIB, 500)) for n in ("x", "y")]
    instances = [vm("a", 4), vm("b", 4), vm("c", 8)]
    greedy: list[Candidate] = list(hosts)
    placed = 0
    for inst in instances:
        request = Request(inst.need, inst.networks)
        if not SCHEDULER.filter(greedy, request).hosts:
            break
        chosen = SCHEDULER.select(greedy, request)
        greedy = [h.claimed(inst.need) if h is chosen else h for h in greedy]
        placed += 1
    assert placed == 2  # the baseline fails on c
    result = plan(instances, hosts)
    assert result.complete
    mapping = where(result)
    assert mapping["a"] == mapping["b"] != mapping["c"]


def test_hardest_to_place_goes_first() -> None:
    """Only `s` has the storage network; the instance needing it must not find it taken."""
    s = host("s", capacity=Resources(16, 4 * GIB, 500))
    p = host("p", capacity=Resources(16, 4 * GIB, 500))
    storage = replace(vm("needs-storage", 4), networks=frozenset({"storage"}))
    result = plan([vm("anywhere", 4), storage], [replace(p, networks=frozenset({"prod"})), s])
    assert result.complete and where(result) == {"anywhere": "p", "needs-storage": "s"}


def test_unplaceable_instances_are_named_with_the_filters_that_removed_hosts() -> None:
    hosts = [host("tiny", capacity=Resources(16, 2 * GIB, 500)), host("off", enabled=False)]
    result = plan([vm("fits", 2), vm("huge", 8)], hosts)
    assert not result.complete
    assert where(result) == {"fits": "tiny"}
    assert result.unplaced == {
        "huge": "no valid host among 2 (host disabled: 1, not enough free RAM: 1)"
    }


def test_hard_affinity_group_moves_together() -> None:
    members = [vm(f"db{n}", 4, group="db", policy=GroupPolicy.AFFINITY) for n in range(3)]
    hosts = [host(f"h{n}") for n in range(3)]
    result = plan([*members, vm("other", 4)], hosts)
    assert result.complete
    mapping = where(result)
    assert len({mapping[m.name] for m in members}) == 1
    assert mapping["other"] != mapping["db0"]  # balance: the bundle is heavy


def test_hard_affinity_follows_members_already_elsewhere() -> None:
    member = vm("db1", 2, group="db", policy=GroupPolicy.AFFINITY)
    hosts = [host("a"), host("b", members={"db": 1}, used=Resources(4, 20 * GIB, 0))]
    assert where(plan([member], hosts)) == {"db1": "b"}


def test_hard_anti_affinity_needs_a_host_per_member() -> None:
    members = [vm(f"web{n}", group="web", policy=GroupPolicy.ANTI_AFFINITY) for n in range(3)]
    hosts = [host("a"), host("b", members={"web": 1})]
    result = plan(members, hosts)
    assert Counter(where(result).values()) == {"a": 1}
    assert len(result.unplaced) == 2
    assert all("server-group anti-affinity: 2" in why for why in result.unplaced.values())


def test_soft_anti_affinity_spreads_even_against_load() -> None:
    members = [vm(f"web{n}", group="web", policy=GroupPolicy.SOFT_ANTI_AFFINITY) for n in range(2)]
    loaded = host("loaded", used=Resources(4, 8 * GIB, 0))
    result = plan(members, [host("empty"), loaded])
    assert sorted(where(result).values()) == ["empty", "loaded"]


def test_incompatible_and_unschedulable_hosts_receive_nothing() -> None:
    old = host("old", traits=replace(TRAITS, qemu_version="7.2"))
    hosts = [old, host("down", up=False), host("maint", in_service=False), host("ok")]
    result = plan([vm(f"vm{n}") for n in range(4)], hosts)
    assert set(where(result).values()) == {"ok"}


# -- properties ---------------------------------------------------------------------------

GROUPS = st.sampled_from([None, ("g1", GroupPolicy.AFFINITY), ("g2", GroupPolicy.ANTI_AFFINITY)])


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[Candidate], list[Movable]]:
    hosts = []
    for n in range(draw(st.integers(0, 6))):
        cap = Resources(draw(st.integers(1, 16)), draw(st.integers(1, 32)) * GIB, 500)
        used = Resources(
            draw(st.integers(0, cap.vcpus)), draw(st.integers(0, cap.ram_mb // GIB)) * GIB, 0
        )
        members = {"g2": 1} if draw(st.booleans()) and draw(st.booleans()) else {}
        hosts.append(
            Candidate(
                f"h{n}",
                draw(st.booleans()) or True,
                draw(st.sampled_from([True, True, True, False])),
                draw(st.sampled_from([True, True, True, False])),
                cap,
                used,
                draw(st.sampled_from([frozenset({"prod"}), frozenset({"prod", "x"})])),
                TRAITS,
                members=members,
            )
        )
    instances = []
    for n in range(draw(st.integers(0, 10))):
        group = draw(GROUPS)
        instances.append(
            Movable(
                f"i{n}",
                f"vm{n}",
                Resources(draw(st.integers(1, 8)), draw(st.integers(1, 12)) * GIB, 10),
                draw(st.sampled_from([frozenset({"prod"}), frozenset({"x"})])),
                group[0] if group else None,
                group[1] if group else None,
            )
        )
    return hosts, instances


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_no_plan_overcommits_breaks_a_hard_policy_or_uses_an_unschedulable_host(
    cluster: tuple[list[Candidate], list[Movable]],
) -> None:
    hosts, instances = cluster
    result = plan(instances, hosts)
    by_name = {h.name: h for h in hosts}
    by_instance = {i.name: i for i in instances}
    mapping = where(result)

    # every instance exactly once: placed or explained
    assert sorted([*mapping, *result.unplaced]) == sorted(by_instance)
    assert all(why.startswith("no valid host among") for why in result.unplaced.values())

    final: dict[str, Resources] = {}
    for name, dest in mapping.items():
        target = by_name[dest]
        assert target.up and target.enabled and target.in_service, dest
        assert by_instance[name].networks <= target.networks
        final[dest] = final.get(dest, target.used) + by_instance[name].need
    for dest, used in final.items():
        cap = by_name[dest].capacity
        assert used.vcpus <= cap.vcpus and used.ram_mb <= cap.ram_mb and used.disk_gb <= cap.disk_gb
        load = next(load for load in result.loads if load.host == dest)
        assert load.after == used and load.before == by_name[dest].used

    anti = Counter(mapping[i.name] for i in instances if i.group == "g2" and i.name in mapping)
    for dest, count in anti.items():
        assert count + by_name[dest].members.get("g2", 0) <= 1
    affine = {mapping[i.name] for i in instances if i.group == "g1" and i.name in mapping}
    assert len(affine) <= 1
    if affine:  # the bundle moved whole
        assert all(i.name in mapping for i in instances if i.group == "g1")


@settings(max_examples=100, deadline=None)
@given(clusters())
def test_an_instance_is_left_out_only_when_no_host_could_take_it_alone(
    cluster: tuple[list[Candidate], list[Movable]],
) -> None:
    """Checked against the hosts as the plan leaves them: nothing left out would still fit."""
    hosts, instances = cluster
    result = plan(instances, hosts)
    by_instance = {i.name: i for i in instances}
    after = {h.name: h for h in hosts}
    for p in result.placements:
        inst = by_instance[p.instance]
        after[p.destination] = after[p.destination].claimed(inst.need, inst.group)
    for name in result.unplaced:
        inst = by_instance[name]
        if inst.group == "g1":
            continue  # a bundle needs room for all its members at once
        request = Request(inst.need, inst.networks, traits=TRAITS)
        alone = [h for h in after.values() if SCHEDULER.passes(h, request)]
        if inst.group == "g2":
            alone = [h for h in alone if h.members.get("g2", 0) == 0]
        assert alone == [], (name, [h.name for h in alone])


def test_empty_host_plans_nothing() -> None:
    result = plan([], [host("a")])
    assert result.complete and result.placements == () and result.loads == ()
    assert plan([vm("x")], []).unplaced == {"x": "no valid host among 0 (no hosts)"}
    assert BIG.share_of(BIG) == 1.0 and NONE.share_of(BIG) == 0.0
