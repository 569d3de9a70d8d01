"""Convergence policy: defaults, overrides, the downtime ladder, and timeouts."""

from __future__ import annotations

import pytest

from ferry.domain.convergence import ConvergencePolicy, TimeoutAction
from ferry.domain.errors import InvalidInput


def test_defaults_never_leave_qemus_bandwidth_default() -> None:
    policy = ConvergencePolicy()
    assert policy.max_bandwidth_mib == 1000 and policy.max_bandwidth_mib != 128
    assert policy.downtime_ladder_ms[0] == 30 and policy.on_timeout is TimeoutAction.ABORT


def test_ladder_steps_up_and_stops_at_the_top() -> None:
    policy = ConvergencePolicy(downtime_ladder_ms=(300, 500, 1000))
    assert [policy.next_downtime(ms) for ms in (300, 500, 1000, 1200)] == [500, 1000, None, None]


def test_timeout_scales_with_memory_with_a_floor() -> None:
    policy = ConvergencePolicy(timeout_s_per_gib=100, min_timeout_s=30)
    assert policy.timeout_s(128) == 30
    assert policy.timeout_s(4096) == 400


def test_overrides_round_trip_through_json() -> None:
    policy = ConvergencePolicy().with_overrides(
        {
            "max_bandwidth_mib": 200,
            "postcopy": True,
            "on_timeout": "postcopy",
            "downtime_ladder_ms": [100, 200],
        }
    )
    assert ConvergencePolicy.from_json(policy.to_json()) == policy
    assert policy.downtime_ladder_ms == (100, 200) and policy.on_timeout is TimeoutAction.POSTCOPY


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"warp": 9}, "unknown policy settings: warp"),
        ({"max_bandwidth_mib": 0}, "max_bandwidth_mib"),
        ({"downtime_ladder_ms": [500, 300]}, "rising"),
        ({"downtime_ladder_ms": []}, "rising"),
        ({"on_timeout": "explode"}, "abort or postcopy"),
        ({"on_timeout": "postcopy"}, "needs postcopy enabled"),
        ({"stall_passes": 0}, "must be > 0"),
    ],
)
def test_bad_overrides_are_refused_with_a_reason(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        ConvergencePolicy().with_overrides(overrides)
