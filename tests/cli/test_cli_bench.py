"""`ferry bench ... --out DIR` and `ferry bench report DIR` through the real console script: the
planner bench (no lab needed) writes its results, the report turns them into markdown with a
real PNG plot, and bad directories or options are clear errors, never tracebacks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.cli.live import FERRY

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def ferry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FERRY, *args], capture_output=True, text=True, timeout=120, check=False)


def test_bench_results_become_a_report_with_plots(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    done = ferry("bench", "planner", "--hosts", "40", "--instances", "10", "--runs", "1",
                 "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "planner.json").read_text())
    assert results[0]["scenario"]["hosts"] == 40

    built = ferry("bench", "report", str(out))

    assert built.returncode == 0, built.stderr
    assert f"report: {out / 'report.md'}" in built.stdout
    text = (out / "report.md").read_text()
    assert "## Evacuation planner: time and balance" in text
    assert "Command: `ferry bench planner --out DIR`" in text
    assert (out / "planner-balance.png").read_bytes().startswith(PNG_MAGIC)


def test_a_report_of_nothing_is_a_clear_error(tmp_path: Path) -> None:
    missing = ferry("bench", "report", str(tmp_path / "absent"))
    assert missing.returncode == 1
    assert "no directory" in missing.stderr and "Traceback" not in missing.stderr

    empty = ferry("bench", "report", str(tmp_path))
    assert empty.returncode == 1
    assert "no bench results in" in empty.stderr
    assert not (tmp_path / "report.md").exists()


def test_a_foreign_result_file_is_refused_without_a_report(tmp_path: Path) -> None:
    (tmp_path / "drain.json").write_text('{"runs": [{"mode": "ferry"}]}')
    done = ferry("bench", "report", str(tmp_path))
    assert done.returncode == 1
    assert "is not one the benches wrote" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "report.md").exists()


def test_unknown_drain_workloads_are_refused_with_the_known_ones(tmp_path: Path) -> None:
    done = ferry("bench", "drain", "--dir", str(tmp_path), "--workloads", "idle,meteor")
    assert done.returncode == 1
    assert "--workloads: unknown workload(s) meteor; known: idle, dirtying" in done.stderr
