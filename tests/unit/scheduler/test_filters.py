"""Each filter alone, the mandatory ones, and the per-filter counts of NoValidHost."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferry.scheduler.filters.compatibility import version_key
from ferry.scheduler.framework import NoValidHost
from ferry.scheduler.model import Candidate, Group, GroupPolicy, Request, Resources, Traits
from ferry.scheduler.setup import build
from tests.unit.scheduler.support import SMALL, TRAITS, host

SCHEDULER = build()
MOVING = replace(SMALL, traits=TRAITS)

BAD_HOSTS: dict[str, Candidate] = {
    "host down": host("down", up=False),
    "host disabled": host("disabled", enabled=False),
    "host in maintenance": host("maint", in_service=False),
    "network not on host": host("nonet", networks=frozenset({"storage"})),
    "not enough free RAM": host("noram", used=Resources(0, 30721, 0)),
    "not enough free vCPU": host("nocpu", used=Resources(15, 0, 0)),
    "not enough free disk": host("nodisk", used=Resources(0, 0, 481)),
    "CPU model, machine type, accelerator or QEMU version incompatible": host(
        "oldqemu", traits=replace(TRAITS, qemu_version="8.1.0")
    ),
}


@pytest.mark.parametrize("reason", list(BAD_HOSTS))
def test_each_filter_removes_its_host_and_counts_it(reason: str) -> None:
    bad = BAD_HOSTS[reason]
    assert SCHEDULER.select([bad, host("good")], MOVING).name == "good"
    with pytest.raises(NoValidHost) as caught:
        SCHEDULER.select([bad], MOVING)
    assert caught.value.removed[reason] == 1
    assert sum(caught.value.removed.values()) == 1
    assert str(caught.value) == f"no valid host among 1 ({reason}: 1)"


def test_exactly_the_request_left_fits() -> None:
    assert SCHEDULER.select([host("h", used=Resources(14, 30720, 480))], SMALL).name == "h"


def test_no_valid_host_counts_every_filter_in_order() -> None:
    hosts = [*BAD_HOSTS.values(), host("down2", up=False, enabled=False)]
    with pytest.raises(NoValidHost) as caught:
        SCHEDULER.select(hosts, MOVING)
    assert list(caught.value.removed.items())[:3] == [
        ("host down", 2),
        ("host disabled", 1),
        ("host in maintenance", 1),
    ]
    assert caught.value.total == 9 and sum(caught.value.removed.values()) == 9
    with pytest.raises(NoValidHost, match=r"^no valid host among 0 \(no hosts\)$"):
        SCHEDULER.select([], SMALL)


def test_new_instances_carry_no_traits_and_pass_any_host() -> None:
    odd = host("odd", traits=Traits("other-cpu", "pc-i440fx-7.0", "7.0"))
    assert SCHEDULER.select([odd], SMALL).name == "odd"
    with pytest.raises(NoValidHost, match="incompatible: 1"):
        SCHEDULER.select([odd], MOVING)
    with pytest.raises(NoValidHost, match="incompatible: 1"):
        SCHEDULER.select([host("unknown", traits=None)], MOVING)


@pytest.mark.parametrize(
    ("have", "passes"),
    [
        (TRAITS, True),
        (replace(TRAITS, qemu_version="9.0.0"), True),  # forwards is fine
        (replace(TRAITS, qemu_version="8.2.1"), False),  # backwards is not
        (replace(TRAITS, cpu_model="host"), False),
        (replace(TRAITS, machine_type="pc-q35-9.0"), False),
        (replace(TRAITS, accelerator="kvm"), False),  # a TCG guest's state does not load in KVM
    ],
)
def test_compatibility_with_the_source(have: Traits, passes: bool) -> None:
    assert SCHEDULER.passes(host("h", traits=have), MOVING) is passes


def test_version_key_reads_qemu_banners() -> None:
    assert version_key("QEMU emulator version 9.0.0 (Debian 1:9.0+ds)") == (9, 0, 0)
    assert version_key("8.2.2") > version_key("8.2") > version_key("8.1.9")
    assert version_key("unknown") == ()


def _in(group: str, policy: GroupPolicy, placed: bool = True) -> Request:
    return replace(SMALL, group=Group(group, policy, placed))


def test_hard_affinity_binds_to_hosts_holding_members_once_one_is_placed() -> None:
    holder, empty = host("holder", members={"db": 1}), host("empty")
    chosen = SCHEDULER.select([empty, holder], _in("db", GroupPolicy.AFFINITY))
    assert chosen.name == "holder"
    with pytest.raises(NoValidHost, match="server-group affinity: 1"):
        SCHEDULER.select([empty], _in("db", GroupPolicy.AFFINITY))
    # the first member goes anywhere
    first = _in("db", GroupPolicy.AFFINITY, placed=False)
    assert SCHEDULER.select([empty], first).name == "empty"


def test_hard_anti_affinity_keeps_members_apart() -> None:
    hosts = [host("a", members={"web": 1}), host("b", members={"other": 3})]
    assert SCHEDULER.select(hosts, _in("web", GroupPolicy.ANTI_AFFINITY)).name == "b"
    with pytest.raises(NoValidHost, match="server-group anti-affinity: 1"):
        SCHEDULER.select(hosts[:1], _in("web", GroupPolicy.ANTI_AFFINITY))


def test_soft_policies_never_filter() -> None:
    crowded = [host("a", members={"web": 5})]
    for policy in (GroupPolicy.SOFT_AFFINITY, GroupPolicy.SOFT_ANTI_AFFINITY):
        assert SCHEDULER.select(crowded, _in("web", policy)).name == "a"


def test_disabled_optional_filters_do_not_run_but_mandatory_ones_always_do() -> None:
    lax = build(enabled_filters=["ram"])
    assert lax.select([host("nonet", networks=frozenset())], SMALL).name == "nonet"
    for name in ("down", "disabled", "maint"):
        bad = next(h for h in BAD_HOSTS.values() if h.name == name)
        with pytest.raises(NoValidHost):
            lax.select([bad], SMALL)


NETWORKS = st.frozensets(st.sampled_from(["prod", "storage", "lab"]), max_size=3)
RES = st.builds(Resources, st.integers(0, 16), st.integers(0, 16384), st.integers(0, 200))
CANDIDATES = st.lists(
    st.builds(
        Candidate,
        name=st.text("abcdefgh", min_size=1, max_size=4),
        up=st.booleans(),
        enabled=st.booleans(),
        in_service=st.booleans(),
        capacity=RES,
        used=RES,
        networks=NETWORKS,
        traits=st.sampled_from([TRAITS, replace(TRAITS, qemu_version="7.2"), None]),
        members=st.sampled_from([{}, {"g": 1}]),
    ),
    max_size=8,
)
REQUESTS = st.builds(
    Request,
    st.builds(Resources, st.integers(0, 8), st.integers(0, 8192), st.integers(0, 100)),
    NETWORKS,
    st.sampled_from(
        [None, *(Group("g", policy, placed) for policy in GroupPolicy for placed in (True, False))]
    ),
    st.sampled_from([None, TRAITS]),
)


def _valid(h: Candidate, r: Request) -> bool:
    free = h.free()
    group_ok = True
    if r.group and r.group.policy is GroupPolicy.ANTI_AFFINITY:
        group_ok = h.members.get("g", 0) == 0
    if r.group and r.group.policy is GroupPolicy.AFFINITY and r.group.placed:
        group_ok = h.members.get("g", 0) > 0
    traits_ok = r.traits is None or (
        h.traits is not None and version_key(h.traits.qemu_version) >= version_key("8.2.2")
    )
    return (
        h.up
        and h.enabled
        and h.in_service
        and r.networks <= h.networks
        and r.need.vcpus <= free.vcpus
        and r.need.ram_mb <= free.ram_mb
        and r.need.disk_gb <= free.disk_gb
        and group_ok
        and traits_ok
    )


@given(CANDIDATES, REQUESTS)
def test_select_returns_only_valid_hosts_and_fails_only_without_one(
    hosts: list[Candidate], request: Request
) -> None:
    """Down, disabled and maintenance hosts never receive anything; nor does any host that
    breaks a resource, network, compatibility or hard group rule."""
    valid = [h for h in hosts if _valid(h, request)]
    try:
        chosen = SCHEDULER.select(hosts, request)
    except NoValidHost as exc:
        assert valid == []
        assert sum(exc.removed.values()) == len(hosts)
        return
    assert chosen in valid
    assert chosen.up and chosen.enabled and chosen.in_service
