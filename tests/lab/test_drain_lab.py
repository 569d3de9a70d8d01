"""A host drained live on real QEMU guests: 3 hosts, 6 instances on host1, each pinged every
20 ms from the root namespace while `ferry host maintenance enter host1 --wait` empties it.
Every instance lands on host2 or host3 (balanced), answers at the same IP without a reboot, the
host is `in_maintenance` and receives nothing new, and exit puts it back in service.

Needs root and qemu-system-x86_64.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.support import Pinger, answers, ferry, ferry_json, page, running_lab

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, taps)"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU installed"),
]
PREFIX = "fld"  # not the default 'fry', nor the other lab modules' prefixes
COUNT = 6
MAX_LOST_PROBES = 50  # 1 s of 20 ms probes: generous, TCG is slow and the machine is busy


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with running_lab(tmp_path_factory.mktemp("lab"), PREFIX, hosts=3) as lab_dir:
        yield lab_dir


def consoles(lab: Path, instance_id: str) -> str:
    """The end of the instance's serial console on every host (what a reboot left there)."""
    logs = sorted(lab.glob(f"hosts/*/run/**/{instance_id}*/**/*.log")) + sorted(
        lab.glob(f"hosts/*/run/{instance_id}/*")
    )
    return "\n".join(
        f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:])
        for path in logs
        if path.is_file() and path.stat().st_size < 10_000_000
    )


def test_drain_moves_every_instance_live_and_keeps_the_host_out(lab: Path) -> None:
    names = [f"d{n}" for n in range(COUNT)]
    for name in names:
        ferry("instance", "create", name, "--flavor", "tiny", "--network", "lab",
              "--host", "host1", "--wait", lab=lab)  # fmt: skip
    shown = {n: ferry_json("instance", "show", n, lab=lab) for n in names}
    ips = {n: shown[n]["ports"][0]["ip"] for n in names}
    assert all(answers(ip) for ip in ips.values())
    before = {n: page(ip) for n, ip in ips.items()}
    pingers = {n: Pinger(ip) for n, ip in ips.items()}
    time.sleep(1)

    started = time.monotonic()
    out = ferry("host", "maintenance", "enter", "host1", "--reason", "kernel update", "--wait",
                lab=lab).stdout  # fmt: skip
    took = time.monotonic() - started
    time.sleep(1)
    blackouts = {n: p.stop() for n, p in pingers.items()}
    print(f"\n{out}\ndrain of {COUNT} instances: {took:.1f} s")
    status = ferry_json("host", "maintenance", "status", "host1", lab=lab)
    moves = {m["instance"]: m for m in status["migrations"]}
    for name in names:
        print(f"  {name} -> {moves[name]['destination']}: downtime {moves[name]['downtime_ms']}"
              f" ms, ping {blackouts[name]}")  # fmt: skip

    assert status["maintenance"]["state"] == "in_maintenance", status["drain"]
    assert status["drain"]["state"] == "completed" and status["instances_remaining"] == 0
    where = {n: ferry_json("instance", "show", n, lab=lab)["host"] for n in names}
    assert Counter(where.values()) == {"host2": COUNT // 2, "host3": COUNT // 2}
    for name, ip in ips.items():
        after = page(ip)  # the TCP endpoint answers at the same IP, without a reboot
        same = (after["ip"], after["boot_id"]) == (before[name]["ip"], before[name]["boot_id"])
        assert same, f"{name} rebooted: {after}\n{consoles(lab, shown[name]['id'])}"
        assert blackouts[name].lost <= MAX_LOST_PROBES, (name, blackouts[name])
        assert moves[name]["state"] == "completed" and moves[name]["attempt"] == 1

    ferry("instance", "create", "newcomer", "--flavor", "tiny", "--network", "lab", lab=lab)
    assert ferry_json("instance", "show", "newcomer", lab=lab)["host"] != "host1"
    refused = ferry("host", "maintenance", "enter", "host1", "--reason", "again", lab=lab,
                    check=False)  # fmt: skip
    assert refused.returncode == 1 and "HTTP 409" in refused.stderr

    exit_ = ("host", "maintenance", "exit", "host1", "--reason", "done", "-f", "json")
    back = json.loads(ferry(*exit_, lab=lab).stdout)
    assert back["maintenance"]["state"] == "in_service" and back["maintenance"]["schedulable"]
    for name in [*names, "newcomer"]:
        ferry("instance", "delete", name, "--wait", "--timeout", "60", lab=lab, check=False)
