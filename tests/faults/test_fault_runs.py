"""A short fault run through the CLI, as `make test` runs it: six seeded runs, one per fault
kind and every phase of a drain among them (the mirror of a local disk included), on shared and
on local storage, each on a fresh fake cluster of real processes, none of which may break an
invariant. `ferry faults run --runs 100` is the long version."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from ferry.faults.cluster import FERRY
from ferry.faults.scenarios import FaultKind, Phase, Storage, scenarios

# seeds 4-9: every kind once, every phase (the mirror: source-agent-kill), both storages
SHORT_SEED, SHORT_RUNS = 4, 6


def _summary(reports: list[dict[str, Any]]) -> str:
    lines = []
    for r in reports:
        lines.append(
            f"seed {r['seed']}: {r['kind']} at {r['phase']} ({r['storage']}): {r['outcome']}"
        )
        lines += [f"  when: {r['when']}", f"  fault: {r['fault']}"]
        lines += [f"  ! {v}" for v in r["violations"]]
        if r["directory"]:
            lines.append(f"  logs: {r['directory']}")
    return "\n".join(lines)


def test_the_short_run_covers_every_kind_and_phase() -> None:
    chosen = scenarios(SHORT_SEED, SHORT_RUNS)
    assert {s.kind for s in chosen} == set(FaultKind)
    assert {s.phase for s in chosen} == set(Phase)
    assert {s.storage for s in chosen} == set(Storage)


def test_a_short_fault_run_breaks_no_invariant(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    argv = [FERRY, "faults", "run", "--runs", str(SHORT_RUNS), "--seed", str(SHORT_SEED)]
    done = subprocess.run(
        [*argv, "--out", str(out), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.stdout, done.stderr
    reports: list[dict[str, Any]] = json.loads(done.stdout)
    summary = _summary(reports)
    assert [r["outcome"] for r in reports] == ["clean"] * SHORT_RUNS, summary
    assert done.returncode == 0, summary + done.stderr
    assert {r["kind"] for r in reports} == set(FaultKind)
    assert json.loads((out / "faults.json").read_text()) == reports


def test_unknown_fault_kinds_are_refused_with_the_known_ones() -> None:
    done = subprocess.run(
        [FERRY, "faults", "run", "--kinds", "link-cut,meteor"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "unknown fault kind(s) meteor; known: controller-kill," in done.stderr


def test_unknown_phases_are_refused_with_the_known_ones() -> None:
    done = subprocess.run(
        [FERRY, "faults", "run", "--phases", "mirror,landing"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "unknown phase(s) landing; known: fan-out, prepare, transfer," in done.stderr
