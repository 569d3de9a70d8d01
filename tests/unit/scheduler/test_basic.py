"""The basic scheduler: each filter, the per-filter counts of NoValidHost, the spreading weigher,
and a property over arbitrary host sets."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferry.scheduler.basic import Candidate, NoValidHost, Request, Resources, select

BIG = Resources(16, 32768, 500)
NONE = Resources(0, 0, 0)
SMALL_REQUEST = Request(Resources(2, 2048, 20), frozenset({"prod"}))


def host(name: str, **changes: object) -> Candidate:
    base = Candidate(name, True, True, True, BIG, NONE, frozenset({"prod", "storage"}))
    return replace(base, **changes)  # type: ignore[arg-type]


BAD_HOSTS: dict[str, Candidate] = {
    "host down": host("down", up=False),
    "host disabled": host("disabled", enabled=False),
    "host in maintenance": host("maint", in_service=False),
    "network not on host": host("nonet", networks=frozenset({"storage"})),
    "not enough free vCPU, RAM or disk": host("full", used=Resources(15, 0, 0)),
}


@pytest.mark.parametrize("reason", list(BAD_HOSTS))
def test_each_filter_removes_its_host_and_counts_it(reason: str) -> None:
    bad = BAD_HOSTS[reason]
    assert select([bad, host("good")], SMALL_REQUEST).name == "good"
    with pytest.raises(NoValidHost) as caught:
        select([bad], SMALL_REQUEST)
    assert caught.value.removed[reason] == 1
    assert sum(caught.value.removed.values()) == 1
    assert str(caught.value) == f"no valid host among 1 ({reason}: 1)"


@pytest.mark.parametrize(
    ("used", "fits"),
    [
        (Resources(14, 30720, 480), True),  # exactly the request left of each resource
        (Resources(15, 0, 0), False),  # one vCPU short
        (Resources(0, 30721, 0), False),  # one MiB short
        (Resources(0, 0, 481), False),  # one GiB short
    ],
)
def test_capacity_filter_checks_every_resource(used: Resources, fits: bool) -> None:
    hosts = [host("h", used=used)]
    if fits:
        assert select(hosts, SMALL_REQUEST).name == "h"
    else:
        with pytest.raises(NoValidHost, match="not enough free vCPU, RAM or disk: 1"):
            select(hosts, SMALL_REQUEST)


def test_no_valid_host_message_counts_every_filter() -> None:
    hosts = [*BAD_HOSTS.values(), host("down2", up=False, enabled=False)]
    with pytest.raises(NoValidHost) as caught:
        select(hosts, SMALL_REQUEST)
    assert caught.value.removed == {
        "host down": 2,
        "host disabled": 1,
        "host in maintenance": 1,
        "network not on host": 1,
        "not enough free vCPU, RAM or disk": 1,
    }
    assert str(caught.value) == (
        "no valid host among 6 (host down: 2, host disabled: 1, host in maintenance: 1, "
        "network not on host: 1, not enough free vCPU, RAM or disk: 1)"
    )


def test_no_hosts_at_all() -> None:
    with pytest.raises(NoValidHost, match=r"^no valid host among 0 \(no hosts\)$"):
        select([], SMALL_REQUEST)


def test_request_without_network_passes_any_host() -> None:
    bare = host("bare", networks=frozenset())
    assert select([bare], Request(Resources(1, 64, 0))).name == "bare"


def test_weigher_prefers_larger_free_ram_fraction_not_absolute() -> None:
    # big has 24 of 32 GiB free (75%), small 4 of 8 GiB (50%): big wins. Once small is empty
    # (100%, but only 8 GiB) it wins over big's larger absolute free RAM.
    big = host("big", used=Resources(0, 8192, 0))
    small_used = host("small", capacity=Resources(16, 8192, 500), used=Resources(0, 4096, 0))
    assert select([big, small_used], SMALL_REQUEST).name == "big"
    small_empty = replace(small_used, used=NONE)
    assert select([big, small_empty], SMALL_REQUEST).name == "small"


def test_weigher_spreads_load_over_equal_hosts() -> None:
    hosts = {name: host(name) for name in ("a", "b", "c")}
    placed: list[str] = []
    for _ in range(6):
        chosen = select(list(hosts.values()), SMALL_REQUEST)
        placed.append(chosen.name)
        used = chosen.used
        hosts[chosen.name] = replace(
            chosen, used=Resources(used.vcpus + 2, used.ram_mb + 2048, used.disk_gb + 20)
        )
    assert sorted(placed) == ["a", "a", "b", "b", "c", "c"]
    assert len(set(placed[:3])) == 3  # each host got one before any got a second


def test_selection_does_not_depend_on_input_order() -> None:
    hosts = [host("a", used=Resources(0, 1024, 0)), host("b"), host("c", used=Resources(0, 1, 0))]
    assert {select(order, SMALL_REQUEST).name for order in (hosts, hosts[::-1])} == {"b"}


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
    ),
    max_size=8,
)
REQUESTS = st.builds(
    Request,
    st.builds(Resources, st.integers(0, 8), st.integers(0, 8192), st.integers(0, 100)),
    NETWORKS,
)


def _passes(h: Candidate, r: Request) -> bool:
    free = h.free()
    return (
        h.up
        and h.enabled
        and h.in_service
        and r.networks <= h.networks
        and r.need.vcpus <= free.vcpus
        and r.need.ram_mb <= free.ram_mb
        and r.need.disk_gb <= free.disk_gb
    )


@given(CANDIDATES, REQUESTS)
def test_select_only_returns_valid_hosts_and_fails_only_without_one(
    hosts: list[Candidate], request: Request
) -> None:
    valid = [h for h in hosts if _passes(h, request)]
    try:
        chosen = select(hosts, request)
    except NoValidHost as exc:
        assert valid == []
        assert sum(exc.removed.values()) == len(hosts)
        return
    assert chosen in valid
    assert chosen.up and chosen.enabled and chosen.in_service
    best = max(h.free().ram_mb / max(h.capacity.ram_mb, 1) for h in valid)
    assert chosen.free().ram_mb / max(chosen.capacity.ram_mb, 1) == best
