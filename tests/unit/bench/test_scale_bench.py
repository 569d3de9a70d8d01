"""The scale bench's pure parts: statistics, CPU time from /proc, per-migration figures net of
the background, the read mix, the outcome check, and the report built from a result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ferry.bench import report as bench_report
from ferry.bench.scale import (
    MANY_DRAINS,
    NO_DRAIN,
    ONE_DRAIN,
    DrainPhase,
    ScaleOptions,
    ScaleResult,
    drained_hosts,
    instance_names,
    networks,
    verify,
)
from ferry.bench.scale_cluster import ScaleError
from ferry.bench.scale_load import ALL, FULL_LIST_EVERY, reads
from ferry.bench.scale_report import figures, latency_rows, table_rows, to_json
from ferry.bench.scale_stats import (
    Sample,
    Usage,
    cpu_seconds,
    latency_summary,
    per_migration,
    percentile,
    ratio,
)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_latency_summary() -> None:
    assert latency_summary([10.0, 30.0, 20.0]) == {
        "count": 3.0,
        "p50": 20.0,
        "p99": 30.0,
        "max": 30.0,
    }
    assert latency_summary([])["count"] == 0.0


def test_cpu_seconds_reads_utime_and_stime_after_the_command_name() -> None:
    # The command name may hold spaces and parentheses: fields count from its last ')'.
    fields = ["S", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "250", "150", "7", "8"]
    stat = "4242 (ferry (x) y) " + " ".join(fields) + " 20 0 1\n"
    assert cpu_seconds(stat, 100) == pytest.approx(4.0)


def test_usage_between_two_samples() -> None:
    start = Sample(at=10.0, cpu_s=2.0, statements=100, by_verb={"SELECT": 90, "UPDATE": 10})
    end = Sample(at=14.0, cpu_s=3.0, statements=180, by_verb={"SELECT": 150, "INSERT": 20},
                 fleet_cpu_s=0.5)  # fmt: skip
    usage = Usage.between(start, end)
    assert (usage.wall_s, usage.cpu_s, usage.statements) == (4.0, 1.0, 80)
    assert usage.by_verb == {"INSERT": 20, "SELECT": 60, "UPDATE": -10}
    assert usage.cpu_share == pytest.approx(0.25)
    assert usage.statements_per_s == pytest.approx(20.0)
    assert usage.fleet_cpu_s == pytest.approx(0.5)


def test_per_migration_gross_and_net_of_the_background() -> None:
    background = Usage(wall_s=10.0, cpu_s=2.0, statements=500, by_verb={})  # 0.2 cores, 50/s
    drain = Usage(wall_s=20.0, cpu_s=10.0, statements=3000, by_verb={})
    figures = per_migration(drain, 20, background)
    assert figures.cpu_ms_gross == pytest.approx(500.0)  # 10 s / 20
    assert figures.cpu_ms_net == pytest.approx(300.0)  # (10 - 0.2 * 20) s / 20
    assert figures.statements_gross == pytest.approx(150.0)
    assert figures.statements_net == pytest.approx(100.0)  # (3000 - 50 * 20) / 20
    assert per_migration(drain, 0, background).cpu_ms_gross == 0.0


def test_ratio_needs_a_positive_baseline() -> None:
    assert ratio(3.0, 2.0) == pytest.approx(1.5)
    assert ratio(3.0, 0.0) is None


def test_instances_spread_over_networks_of_a_thousand() -> None:
    assert networks(300) == [("net0", "10.0.0.0/16")]
    assert len(networks(20_000)) == 20 and networks(20_000)[-1] == ("net19", "10.19.0.0/16")
    assert len(networks(20_001)) == 21


def test_drained_hosts_are_spread_and_distinct() -> None:
    names = [f"host{i}" for i in range(1, 1001)]
    single, many = drained_hosts(names, 20)
    assert single == "host1" and len(many) == 20 and single not in many
    assert len(set(many)) == 20 and many[-1] == "host953"


def test_instance_names_sort_in_creation_order() -> None:
    names = instance_names(1000)
    assert names[0] == "vm0000" and names[-1] == "vm0999" and names == sorted(names)


def test_options_refuse_a_cluster_without_room() -> None:
    ScaleOptions(hosts=30, instances=300, drains=3).check()
    with pytest.raises(ScaleError, match="need at least"):
        ScaleOptions(hosts=10, instances=300, drains=9).check()
    with pytest.raises(ScaleError, match="no room"):
        ScaleOptions(hosts=10, instances=3000, drains=1, host_ram_mb=65536).check()
    assert ScaleOptions(hosts=1000).beat_s == 50.0
    assert ScaleOptions(hosts=30).beat_s == 2.0
    assert ScaleOptions(drains=20).policy["max_parallel"] == 60


def test_read_mix_rotates_over_hosts_and_instances() -> None:
    hosts = [f"host{i}" for i in range(1, 31)]
    first, second = reads(hosts, ["host1"], ["vm0", "vm1"], 0), reads(hosts, ["host1"], [], 1)
    assert first[0].path == "/v1/hosts" and first[1].path == "/v1/instances"
    assert "/v1/instances" not in [r.path for r in second]  # the bulk read: one tour in ten
    assert "/v1/instances" in [r.path for r in reads(hosts, [], [], FULL_LIST_EVERY)]
    assert "/v1/instances?host=host1" in [r.path for r in first]
    assert "/v1/instances?host=host10" in [r.path for r in second]
    assert {r.label for r in first} >= {"GET /v1/hosts/H/maintenance", "GET /v1/instances/NAME"}
    assert not [r for r in second if r.label == "GET /v1/instances/NAME"]


def _host(state: str = "in_service", instances: int = 0) -> dict[str, Any]:
    return {"maintenance": {"state": state}, "instances": instances}


def test_verify_passes_a_clean_outcome() -> None:
    hosts = {"h1": _host("in_maintenance"), "h2": _host(instances=1), "h3": _host(instances=1)}
    listed = [{"id": "a", "name": "vm-a", "state": "running", "host": "h2"},
              {"id": "b", "name": "vm-b", "state": "running", "host": "h3"}]  # fmt: skip
    seen = {"h1": [], "h2": [{"id": "a", "power": "running"}],
            "h3": [{"id": "b", "power": "running"}]}  # fmt: skip
    outcome = verify(hosts, listed, seen, ["h1"], 2)
    assert outcome["problems"] == []
    assert outcome["on_exactly_their_host"] == 2 and outcome["drained_in_maintenance"] == 1


def test_verify_names_every_kind_of_wrong_outcome() -> None:
    hosts = {"h1": _host("draining", 1), "h2": _host(instances=1)}
    listed = [{"id": "a", "name": "vm-a", "state": "running", "host": "h2"}]
    seen = {"h1": [{"id": "a", "power": "running"}, {"id": "x", "power": "running"}],
            "h2": [{"id": "a", "power": "running"}]}  # fmt: skip
    problems = verify(hosts, listed, seen, ["h1"], 2)["problems"]
    assert "h1 ended draining, not in_maintenance" in problems
    assert "h1 still holds instances or guests" in problems
    assert "1 instances listed, 2 seeded" in problems
    assert any(p.startswith("1 instance(s) not running on exactly their host") for p in problems)
    assert "1 guest(s) run that the controller does not list" in problems


def _phase(hosts: list[str], cpu: float, statements: int, migrations: int) -> DrainPhase:
    usage = Usage(wall_s=10.0, cpu_s=cpu, statements=statements, by_verb={})
    return DrainPhase(hosts, usage, migrations, migrations, [10.0] * len(hosts))


def _latency(p50: float, p99: float) -> dict[str, dict[str, float]]:
    summary = {"count": 100.0, "p50": p50, "p99": p99, "max": p99}
    return {ALL: summary, "GET /v1/hosts": summary}


def _result() -> ScaleResult:
    idle = Usage(wall_s=10.0, cpu_s=1.0, statements=100, by_verb={})
    reads_only = Usage(wall_s=10.0, cpu_s=2.0, statements=200, by_verb={})  # 0.2 cores
    return ScaleResult(
        options=ScaleOptions(hosts=100, instances=2000, drains=4),
        setup={"fleet_up_s": 5.0, "seed_create_s": 100.0, "seed_running_s": 120.0},
        idle=idle,
        reads=reads_only,
        one=_phase(["host1"], cpu=4.0, statements=2200, migrations=20),
        many=_phase(["host2", "host3", "host4", "host5"], cpu=10.0, statements=6000, migrations=80),
        latency={
            NO_DRAIN: _latency(10, 40),
            ONE_DRAIN: _latency(12, 50),
            MANY_DRAINS: _latency(20, 120),
        },
        read_errors={},
        read_skipped={},
        verification={
            "instances": 2000,
            "on_exactly_their_host": 2000,
            "drained_in_maintenance": 5,
            "drained": 5,
            "problems": [],
        },
        wall_s=300.0,
    )


def test_report_sets_every_figure_against_its_baseline() -> None:
    report = to_json(_result())
    json.dumps(report)  # serializable as is
    by_name = {f["figure"]: f for f in report["figures"]}
    p99 = by_name["API read latency p99"]
    assert (p99["baseline"], p99["baseline_value"], p99["value"]) == (NO_DRAIN, 40, 120)
    assert p99["ratio"] == pytest.approx(3.0)
    net = by_name["controller CPU per migration, net"]
    # one drain: (4 - 0.2 * 10) s / 20 = 100 ms; four: (10 - 2) s / 80 = 100 ms
    assert net["baseline"] == ONE_DRAIN and net["baseline_value"] == pytest.approx(100.0)
    assert net["value"] == pytest.approx(100.0) and net["ratio"] == pytest.approx(1.0)
    statements = by_name["SQL statements per migration, gross"]
    assert (statements["baseline_value"], statements["value"]) == (110.0, 75.0)
    assert by_name["migrations per second"]["ratio"] == pytest.approx(4.0)
    assert report["latency_ratios"]["GET /v1/hosts"] == {"p50": 2.0, "p99": 3.0}
    assert figures(report) == report["figures"]


def test_report_renders_as_table_rows_and_a_report_section(tmp_path: Path) -> None:
    report = to_json(_result())
    rows = table_rows(report)
    assert rows[0] == {"figure": "API read latency p50", "unit": "ms",
                       "baseline": "10.00 (no drain)", "value": "20.00 (4 drains)",
                       "ratio": "2.00"}  # fmt: skip
    assert latency_rows(report)[0]["p99"] == "40 -> 120"
    bench_report.save(tmp_path, "scale", report)
    text = bench_report.build(tmp_path).read_text()
    assert "## Control plane at scale (fake driver)" in text
    options = report["options"]
    assert (f"Command: `ferry bench scale --hosts {options['hosts']} --instances "
            f"{options['instances']} --drains {options['drains']} --read-rate") in text  # fmt: skip
    assert "| controller CPU per migration, net | ms | 100.00 (1 drain) |" in text
    assert "](scale-latency.png)" in text
    assert (tmp_path / "scale-latency.png").read_bytes().startswith(b"\x89PNG")
    assert "2000 instances created in 100.0s (20/s" in text
    assert "problems: none" in text
