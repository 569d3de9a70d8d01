"""The drain bench's arithmetic: the physical bound, ratios, and the blackout summary."""

from __future__ import annotations

import pytest

from ferry.bench.drain import (
    IDLE,
    DrainRun,
    Rates,
    Workload,
    blackout_summary,
    migration_throughput,
    to_json,
    workloads_named,
)
from ferry.lab.disk_fill import flavor_disk_gb


def test_bound_is_bytes_moved_over_the_source_link() -> None:
    run = DrainRun("idle", "ferry", wall_s=12.0, moved_mib=600.0, link_mibps=100.0)
    assert run.bound_s == pytest.approx(6.0)
    assert run.ratio_to_bound == pytest.approx(2.0)


def test_ratios_against_one_at_a_time_come_from_the_same_report() -> None:
    ferry = DrainRun("idle", "ferry", 10.0, 500.0, 100.0, [100.0, 300.0], [90, 250], [40.0, 60.0])
    serial = DrainRun("idle", "one at a time", 25.0, 500.0, 100.0, [120.0], [110], [90.0])
    report = to_json([ferry, serial])["runs"]
    assert [r["ratio_to_one_at_a_time"] for r in report] == [pytest.approx(0.4), 1.0]
    assert report[0]["blackout_ms"] == {"median": 200.0, "p99": 300.0, "max": 300.0}
    assert report[0]["throughput_to_link"] == pytest.approx(0.5)  # median 50 over 100
    assert report[0]["drain_rate_to_link"] == pytest.approx(0.5)  # 500 MiB in 10 s over 100
    assert to_json([ferry])["runs"][0]["ratio_to_one_at_a_time"] is None


def test_each_workload_is_compared_with_its_own_one_at_a_time_drain() -> None:
    runs = [
        DrainRun("idle", "ferry", 10.0, 500.0, 100.0),
        DrainRun("idle", "one at a time", 20.0, 500.0, 100.0),
        DrainRun("dirtying", "ferry", 30.0, 900.0, 100.0),
        DrainRun("dirtying", "one at a time", 40.0, 900.0, 100.0),
    ]
    ratios = [r["ratio_to_one_at_a_time"] for r in to_json(runs)["runs"]]
    assert ratios == [pytest.approx(0.5), 1.0, pytest.approx(0.75), 1.0]


def test_migration_throughput_is_bytes_over_its_own_time() -> None:
    m = {"bytes_sent": 200 * 2**20, "started_at": "2026-01-01T00:00:00Z",
         "finished_at": "2026-01-01T00:00:04.000000Z"}  # fmt: skip
    assert migration_throughput(m) == pytest.approx(50.0)
    assert migration_throughput({**m, "started_at": None}) is None
    assert migration_throughput({**m, "finished_at": m["started_at"]}) is None


def test_blackout_summary_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100 ms
    assert blackout_summary(values) == {"median": 50.5, "p99": 99.0, "max": 100.0}
    assert blackout_summary([]) == {"median": 0.0, "p99": 0.0, "max": 0.0}
    assert blackout_summary([7.0]) == {"median": 7.0, "p99": 7.0, "max": 7.0}


def test_workloads_are_chosen_by_name_in_order_once() -> None:
    rates = Rates(dirty_mibps=24, disk_mib=2048, disk_write_kibps=512)
    chosen = workloads_named("dirtying, idle,dirtying", rates)
    assert chosen == (Workload("dirtying", 24), IDLE)
    assert not any(w.local for w in chosen)
    disks = workloads_named("disk-writing,disk-idle", rates)
    assert disks == (Workload("disk-writing", 0, 2048, 512), Workload("disk-idle", 0, 2048))
    assert all(w.local for w in disks)
    known = "known: idle, dirtying, disk-idle, disk-writing"
    with pytest.raises(ValueError, match=rf"unknown workload\(s\) busy; {known}"):
        workloads_named("idle,busy", rates)
    with pytest.raises(ValueError, match="none given"):
        workloads_named(" , ", rates)


def test_a_disk_workloads_flavor_holds_the_image_and_its_data() -> None:
    assert flavor_disk_gb(1024) == 2  # 512 MiB of image room, then 1 GiB
    assert flavor_disk_gb(512) == 1
    assert flavor_disk_gb(513) == 2
