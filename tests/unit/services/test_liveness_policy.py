"""LivenessPolicy: judging many hosts at one instant (`heard_since`, used by placement) agrees
with judging one host row (`of`), at every boundary and under the watching-since rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ferry.db.models import Host
from ferry.domain.host import Liveness
from ferry.services.hosts import LivenessPolicy

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
INTERVAL = timedelta(seconds=10)
WINDOW = INTERVAL * 3
TICK = timedelta(microseconds=1)


def _host(last: datetime | None, seen: Liveness) -> Host:
    return Host(name="h", last_heartbeat_at=last, liveness_seen=seen.value)


@pytest.mark.parametrize("seen", [Liveness.UP, Liveness.DOWN])
@pytest.mark.parametrize(
    "age", [None, timedelta(0), WINDOW - TICK, WINDOW, WINDOW + TICK, WINDOW * 10]
)
@pytest.mark.parametrize("watching_for", [timedelta(0), WINDOW - TICK, WINDOW, WINDOW * 2], ids=str)
def test_heard_since_agrees_with_of(
    seen: Liveness, age: timedelta | None, watching_for: timedelta
) -> None:
    policy = LivenessPolicy(INTERVAL, 3, watching_since=NOW - watching_for)
    last = None if age is None else NOW - age
    expected = policy.of(_host(last, seen), NOW) is Liveness.UP
    assert policy.heard_since(NOW)(last, seen.value) is expected


def test_a_host_up_when_the_controller_started_counts_from_then() -> None:
    policy = LivenessPolicy(INTERVAL, 3, watching_since=NOW - INTERVAL)
    up = policy.heard_since(NOW)
    assert up(NOW - WINDOW * 10, Liveness.UP.value)
    assert not up(NOW - WINDOW * 10, Liveness.DOWN.value)
    assert not up(None, Liveness.UP.value)
