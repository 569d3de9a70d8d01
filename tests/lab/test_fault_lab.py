"""Fault runs on real hosts (`ferry faults run --lab`): a source's and a destination's QEMU
SIGKILLed while a drain prepares them, the drained host's link cut while a local disk is being
copied to its destination (the mirror phase, on a lab whose hosts keep disks on their own
storage), the controller SIGKILLed at the switchover; each run on a fresh 3-host lab of QEMU
guests. After each run every invariant of the fake runs holds (each disk intact, `qemu-img
check`, and in exactly one place), each running instance answers ping on its IP, and no QEMU
process or tap is left that its host's agent does not list. The lab is gone after.

`make faults` runs every kind at every phase, on fake hosts and on the lab.
Needs root and qemu-system-x86_64.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from ferry.faults.lab import LAB_PREFIX
from ferry.faults.scenarios import FaultKind, Phase, Storage, scenarios
from tests.cli.live import FERRY
from tests.lab.support import namespaces, qemu_pids

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, taps)"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU installed"),
]

# source-guest-kill, dest-guest-kill at prepare; link-cut at mirror (local disks);
# controller-kill at switchover
SEED, RUNS = 21, 4


def test_the_lab_runs_cover_guest_kills_a_link_cut_and_a_controller_kill() -> None:
    chosen = [(s.kind, s.phase, s.storage) for s in scenarios(SEED, RUNS)]
    assert chosen == [
        (FaultKind.SOURCE_GUEST_KILL, Phase.PREPARE, Storage.SHARED),
        (FaultKind.DEST_GUEST_KILL, Phase.PREPARE, Storage.SHARED),
        (FaultKind.LINK_CUT, Phase.MIRROR, Storage.LOCAL),
        (FaultKind.CONTROLLER_KILL, Phase.SWITCHOVER, Storage.SHARED),
    ]


def test_faults_on_real_hosts_break_no_invariant(tmp_path_factory: pytest.TempPathFactory) -> None:
    # a short directory: QMP sockets live under it (unix socket paths are short)
    lab, out = tmp_path_factory.mktemp("flf"), tmp_path_factory.mktemp("runs")
    argv = [FERRY, "faults", "run", "--lab", str(lab), "--runs", str(RUNS), "--seed", str(SEED),
            "--out", str(out), "--format", "json"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1200, check=False)
    try:
        reports: list[dict[str, Any]] = json.loads(done.stdout) if done.stdout else []
        summary = "\n".join(
            f"seed {r['seed']}: {r['kind']} at {r['phase']}: {r['outcome']} ({r['when']}; "
            f"{r['fault']}) {r['violations']} {r['directory'] or ''}"
            for r in reports
        )
        print(f"\n{summary}")
        assert [r["outcome"] for r in reports] == ["clean"] * RUNS, summary + done.stderr[-3000:]
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads((out / "faults-lab.json").read_text()) == reports
        # a fault that kills a guest's only copy leaves it in error; every other one runs
        for report in reports:
            assert sum(report["instances"].values()) == 2, report
    finally:
        assert namespaces(LAB_PREFIX) == []
        assert qemu_pids(str(lab)) == []
