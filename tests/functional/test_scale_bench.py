"""`ferry bench scale` end to end at a small size: a real controller, one fleet process serving
20 fake-driver hosts over mutual TLS, 100 instances, 3 hosts drained at once after a single
drain, under a read load. The outcome is checked by the bench against the controller and every
agent, and here against its report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli.live import FERRY

pytestmark = pytest.mark.slow


def test_scale_bench_drains_hosts_and_reports_ratios(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    argv = [FERRY, "bench", "scale", "--hosts", "20", "--instances", "100", "--drains", "3",
            "--idle-s", "1", "--reads-s", "3", "--read-rate", "10", "--state-dir", str(state),
            "--out", str(out), "--format", "json"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert json.loads((out / "scale.json").read_text()) == report
    built = subprocess.run([FERRY, "bench", "report", str(out)], capture_output=True, text=True,
                           timeout=60, check=False)  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "## Control plane at scale (fake driver)" in (out / "report.md").read_text()

    verified = report["verification"]
    assert report["problems"] == []
    assert (verified["drained_in_maintenance"], verified["drained"]) == (4, 4)
    assert verified["instances"] == verified["on_exactly_their_host"] == 100

    one, many = report["phases"]["one_drain"], report["phases"]["drains"]
    assert one["migrations"] == 5  # the single drained host held 100 / 20 instances
    assert many["migrations"] >= 15 and len(many["hosts"]) == 3
    for phase in (one, many):
        assert phase["usage"]["cpu_s"] > 0 and phase["usage"]["statements"] > 0
        assert phase["per_migration"]["statements_gross"] > 0
        assert all(seconds > 0 for seconds in phase["drain_s"])
    for figure in report["figures"]:
        if figure["figure"].endswith(", net"):  # less an estimate: may dip below zero
            assert isinstance(figure["value"], float) and figure["ratio"] is not None, figure
        else:
            assert figure["baseline_value"] > 0 and figure["value"] > 0, figure
            assert figure["ratio"] is not None and figure["ratio"] > 0, figure
    for phase in ("no drain", "1 drain", "drains"):
        assert report["latency"][phase]["all"]["count"] > 0
    assert report["setup"]["seed_running_s"] >= report["setup"]["seed_create_s"] > 0

    # Every process the bench started is gone.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(state) not in ps.stdout
