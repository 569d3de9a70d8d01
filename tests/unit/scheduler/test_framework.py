"""Weighing (normalized, multiplied, summed), each weigher, and building from configuration."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ferry.config import ControllerSettings
from ferry.scheduler.model import Group, GroupPolicy, Resources
from ferry.scheduler.setup import build
from tests.unit.scheduler.support import NONE, SMALL, host

SCHEDULER = build()


def _place_many(multipliers: dict[str, float], count: int) -> list[str]:
    scheduler = build(multipliers=multipliers)
    hosts = {name: host(name) for name in ("a", "b", "c")}
    placed = []
    for _ in range(count):
        chosen = scheduler.select(list(hosts.values()), SMALL)
        placed.append(chosen.name)
        hosts[chosen.name] = chosen.claimed(SMALL.need)
    return placed


def test_default_weighers_spread_over_equal_hosts() -> None:
    placed = _place_many({}, 6)
    assert sorted(placed) == ["a", "a", "b", "b", "c", "c"]
    assert len(set(placed[:3])) == 3  # each host got one before any got a second


def test_a_negative_ram_multiplier_stacks() -> None:
    stacked = {"free_ram": -1.0, "free_vcpu": 0.0, "inbound_migrations": 0.0}
    assert _place_many(stacked, 6) == ["a"] * 6


def test_free_ram_is_weighed_as_a_share_of_capacity() -> None:
    # big: 24 of 32 GiB free (75%), small: 4 of 8 GiB (50%): big wins; an empty small (100%)
    # wins over big's larger absolute free RAM.
    big = host("big", used=Resources(0, 8192, 0))
    small = host("small", capacity=Resources(16, 8192, 500), used=Resources(0, 4096, 0))
    assert SCHEDULER.select([big, small], SMALL).name == "big"
    assert SCHEDULER.select([big, replace(small, used=NONE)], SMALL).name == "small"


def test_inbound_migrations_make_a_host_less_attractive() -> None:
    busy, calm = host("a-busy", inbound=3), host("b-calm")
    assert SCHEDULER.select([busy, calm], SMALL).name == "b-calm"
    indifferent = build(multipliers={"inbound_migrations": 0.0})
    assert indifferent.select([busy, calm], SMALL).name == "a-busy"  # tie: first name


def test_soft_group_weighers() -> None:
    together = host("b", members={"web": 2}, used=Resources(0, 4096, 0))
    alone = host("a")
    affine = replace(SMALL, group=Group("web", GroupPolicy.SOFT_AFFINITY, True))
    assert SCHEDULER.select([alone, together], affine).name == "b"
    apart = replace(SMALL, group=Group("web", GroupPolicy.SOFT_ANTI_AFFINITY, True))
    assert SCHEDULER.select([alone, together], apart).name == "a"


def test_weights_are_normalized_so_scale_does_not_matter() -> None:
    hosts = [host("a", used=Resources(0, 1024, 0)), host("b"), host("c", used=Resources(0, 1, 0))]
    weights = build(multipliers={"free_vcpu": 0, "inbound_migrations": 0}).weigh(hosts, SMALL)
    assert weights[1] == pytest.approx(1.0) and weights[0] == pytest.approx(0.0)
    assert 0 < weights[2] < 1
    assert {SCHEDULER.select(order, SMALL).name for order in (hosts, hosts[::-1])} == {"b"}


def test_unknown_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown scheduler filter\(s\) rack; known: network"):
        build(enabled_filters=["rack"])
    with pytest.raises(ValueError, match="unknown scheduler weigher"):
        build(multipliers={"cheapest": 1})
    with pytest.raises(ValueError, match="listed twice"):
        build(enabled_filters=["ram", "ram"])


def test_controller_settings_validate_the_scheduler(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="unknown scheduler filter"):
        ControllerSettings(scheduler_filters=["nope"])
    settings = ControllerSettings(scheduler_filters=["vcpu", "ram"])
    built = build(settings.scheduler_filters, settings.scheduler_weighers)
    mandatory = ["host_up", "enabled", "in_service", "storage"]  # whatever the configuration
    assert [f.name for f in built.filters] == [*mandatory, "vcpu", "ram"]
