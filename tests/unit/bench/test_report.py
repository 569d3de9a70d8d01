"""The bench report: markdown with a section per result file present, ratios as the benches
computed them, and real PNG plots next to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ferry.bench import migration, planner, report
from ferry.bench.drain import DrainRun, to_json
from ferry.scheduler.setup import build

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _drain_results() -> dict[str, object]:
    return to_json([
        DrainRun("idle", "ferry", 8.0, 530.0, 114.0, [100.0, 140.0, 240.0], [90], [60.0, 80.0]),
        DrainRun("idle", "one at a time", 14.4, 530.0, 114.0, [120.0, 160.0], [110], [100.0]),
    ])  # fmt: skip


def test_a_report_has_a_section_per_result_and_real_plots(tmp_path: Path) -> None:
    results = planner.to_json(planner.run(build(), planner.specs([40], 10, 1), lambda _: None))
    report.save(tmp_path, "planner", results)
    report.save(tmp_path, "drain", _drain_results())

    text = report.build(tmp_path).read_text()

    assert "## Evacuation planner: time and balance" in text
    assert "## Lab drain: real QEMU, shaped links" in text
    assert "## Live migration of one guest" not in text  # no migration.json in the directory
    assert "| idle | one at a time | 14.40 |" in text
    assert "| 0.56 |" in text  # 8.0 s over the 14.4 s of one at a time
    assert "140/240/240" in text  # blackout median/p99/max of the Ferry drain
    for name in ("planner-balance.png", "drain-time.png", "drain-blackout.png"):
        assert f"]({name})" in text
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)


def _sample(downtime_ms: int, blackout_ms: float) -> migration.Sample:
    return migration.Sample(
        wall_s=2.0, stream_s=1.0, downtime_ms=downtime_ms, blackout_ms=blackout_ms,
        silence_ms=blackout_ms + 40,
        lost_probes=3, sent_mib=90.0, passes=3,
    )  # fmt: skip


def test_the_migration_section_reports_blackout_and_downtime_spreads(tmp_path: Path) -> None:
    idle = migration.Result(migration.Scenario("idle", 128, 0), 1.12,
                            [_sample(40 + n, 20.0 + 10 * (n % 3)) for n in range(20)])  # fmt: skip
    idle.samples.append(_sample(72, 90.0))
    results = migration.to_json([idle])
    assert results[0]["probe_interval_ms"] == 10.0
    # nearest rank: below 100 runs the p99 is the largest
    assert results[0]["blackout_ms"] == {"median": 30.0, "p99": 90.0, "max": 90.0}
    assert results[0]["downtime_ms"] == {"median": 50.0, "p99": 72.0, "max": 72.0}
    report.save(tmp_path, "migration", results)

    text = report.build(tmp_path).read_text()

    assert "## Live migration of one guest" in text
    assert "| idle | 128 | 0 | 21 | 1.12 |" in text
    assert "| 50/72/72 | 30/90/90 | 70/130/130 |" in text  # downtime, blackout, silence
    assert "10 ms prober" in text
    assert (tmp_path / "migration-blackout.png").read_bytes().startswith(PNG_MAGIC)


def test_no_results_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no bench results"):
        report.build(tmp_path)


def test_markdown_table_formats_floats_and_keeps_text() -> None:
    lines = report.markdown_table(["a", "b"], [["x", 1.23456], ["y", 7]])
    assert lines == ["| a | b |", "|---|---|", "| x | 1.23 |", "| y | 7 |"]


def _fault_run(seed: int, kind: str, phase: str, outcome: str, *violations: str) -> dict[str, Any]:
    return {"seed": seed, "kind": kind, "phase": phase, "outcome": outcome,
            "violations": list(violations)}  # fmt: skip


def test_fault_runs_are_tallied_per_kind_and_phase(tmp_path: Path) -> None:
    report.save(tmp_path, "faults", [
        _fault_run(1, "controller-kill", "transfer", "clean"),
        _fault_run(7, "controller-kill", "transfer", "missed"),
        _fault_run(2, "link-cut", "prepare", "violated", "[placement] vm1 runs on 2 hosts"),
    ])  # fmt: skip

    text = report.build(tmp_path).read_text()

    assert "## Fault injection on simulated hosts" in text
    assert "Command: `ferry faults run --runs 3 --seed 1 --out DIR`" in text
    assert "| controller-kill | transfer | 2 | 1 | 1 | 0 |" in text
    assert "| link-cut | prepare | 1 | 0 | 0 | 1 |" in text
    assert "- seed 2: [placement] vm1 runs on 2 hosts" in text


def test_lab_fault_runs_get_their_own_section(tmp_path: Path) -> None:
    report.save(tmp_path, "faults-lab", [_fault_run(3, "link-cut", "transfer", "clean")])

    text = report.build(tmp_path).read_text()

    assert "## Fault injection on real hosts" in text
    assert "## Fault injection on simulated hosts" not in text
    assert "Command: `ferry faults run --lab LAB --runs 1 --seed 3 --out DIR`" in text
    assert "each running instance answers ping on its IP" in text
