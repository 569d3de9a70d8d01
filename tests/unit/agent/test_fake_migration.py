"""The fake driver's pre-copy model behaves like QEMU's, qualitatively and repeatably."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ferry.agent.drivers.base import MigrationParams
from ferry.agent.drivers.fake_migration import MIB, SWITCHOVER_MS, SimulatedMigration


def model(
    ram: int,
    dirty: int,
    bw: int,
    *,
    ac: bool = False,
    limit: int = 300,
    postcopy_at: float | None = None,
) -> SimulatedMigration:
    params = MigrationParams(bw * MIB, limit, ac, postcopy_at is not None)
    return SimulatedMigration(ram * MIB, dirty * MIB, params, postcopy_at)


def test_idle_guest_takes_memory_over_bandwidth() -> None:
    done = model(128, 0, 100).at(60)
    assert (done.status, done.passes, done.downtime_ms) == ("completed", 1, SWITCHOVER_MS)
    assert done.total_time_ms == round(128 / 100 * 1000 + SWITCHOVER_MS)


def test_progress_is_partial_before_the_end() -> None:
    half = model(128, 0, 100).at(0.64)
    assert half.status == "active"
    assert half.transferred_bytes == 64 * MIB and half.remaining_bytes == 64 * MIB


def test_faster_dirtier_than_link_never_converges_without_auto_converge() -> None:
    reading = model(128, 200, 100).at(300)
    assert reading.status == "active" and reading.passes > 100


def test_auto_converge_throttles_until_it_converges() -> None:
    reading = model(128, 200, 100, ac=True).at(300)
    assert reading.status == "completed" and reading.passes > 3
    assert reading.dirty_rate_bytes < 200 * MIB


def test_postcopy_finishes_what_precopy_cannot() -> None:
    reading = model(128, 200, 100, postcopy_at=5.0).at(300)
    assert reading.status == "completed" and reading.downtime_ms == SWITCHOVER_MS


@given(
    ram=st.integers(64, 4096),
    dirty=st.integers(0, 500),
    bw=st.integers(10, 2000),
    ac=st.booleans(),
    limit=st.integers(50, 2000),
    at=st.floats(0, 600),
)
def test_completed_precopy_respects_the_downtime_limit(
    ram: int, dirty: int, bw: int, ac: bool, limit: int, at: float
) -> None:
    reading = model(ram, dirty, bw, ac=ac, limit=limit).at(at)
    assert reading.transferred_bytes >= 0 and reading.remaining_bytes >= 0
    if reading.status == "completed":
        assert reading.downtime_ms is not None and reading.downtime_ms <= limit + 1
    assert model(ram, dirty, bw, ac=ac, limit=limit).at(at) == reading  # repeatable
