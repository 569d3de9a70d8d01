"""The whole migration workflow on real QEMU guests: `ferry instance migrate` asks the controller,
whose reconciler drives both agents (incoming QEMU, TLS stream, convergence policy, switchover,
cleanup) while the tests watch the guest from outside: ping every 20 ms, its HTTP page (boot id,
IP), the dirtier's page, the QEMU processes and taps in each host's namespace, and the records.

Needs root and qemu-system-x86_64. One 3-host lab (prefix "flw") serves the module; each test
boots its own instances on host1 and deletes them wherever they end up.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ferry.lab.cluster import LabRecord
from ferry.lab.lifecycle import start_agent
from tests.lab.support import (
    Pinger,
    answers,
    ended,
    ferry,
    ferry_json,
    metrics,
    migration,
    namespace_of,
    page,
    ping,
    qemu_pids,
    restart_controller,
    running_lab,
    taps,
    wait_for,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, taps)"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU installed"),
]
PREFIX = "flw"  # not the default 'fry', nor the other lab modules' prefixes
MAX_LOST_PROBES = 50  # 1 s of 20 ms probes: generous, TCG is slow and the machine may be busy


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with running_lab(tmp_path_factory.mktemp("lab"), PREFIX, hosts=3) as lab_dir:
        ferry("flavor", "create", "busy", "--vcpus", "1", "--ram-mb", "160", lab=lab_dir)
        yield lab_dir


@dataclass
class Vm:
    name: str
    id: str
    ip: str


@pytest.fixture
def boot(lab: Path) -> Iterator[Callable[..., Vm]]:
    """boot(name, dirty=0, flavor="tiny"): an instance on host1 that answers ping."""
    made: list[str] = []

    def _boot(name: str, dirty: int = 0, flavor: str = "tiny") -> Vm:
        made.append(name)
        ferry("instance", "create", name, "--flavor", flavor, "--network", "lab",
              "--host", "host1", "--dirty-rate", str(dirty), "--wait", lab=lab)  # fmt: skip
        inst = ferry_json("instance", "show", name, lab=lab)
        vm = Vm(name, inst["id"], inst["ports"][0]["ip"])
        assert answers(vm.ip), f"{name} does not answer ping"
        return vm

    yield _boot
    for name in made:
        ferry("instance", "delete", name, "--wait", "--timeout", "60", lab=lab, check=False)


def start(lab: Path, vm: Vm, *policy: str) -> dict[str, Any]:
    """`ferry instance migrate` without --wait: the new migration record."""
    args = [arg for pair in policy for arg in ("--policy", pair)]
    started: dict[str, Any] = ferry_json("instance", "migrate", vm.name, *args, lab=lab)
    return started


def streaming(lab: Path, ident: str, at_least: int = 2 * 2**20) -> dict[str, Any]:
    """Once the migration runs and has sent `at_least` bytes."""

    def probe() -> dict[str, Any] | None:
        m = migration(lab, ident)
        assert m["state"] in ("scheduled", "preparing", "running"), m
        return m if m["state"] == "running" and (m["bytes_sent"] or 0) >= at_least else None

    return wait_for(f"migration {ident} to stream", probe, 60)


def host_of(lab: Path, vm: Vm) -> str:
    return str(ferry_json("instance", "show", vm.name, lab=lab)["host"])


def instance_counts(lab: Path) -> dict[str, int]:
    return {h["name"]: h["instances"] for h in ferry_json("host", "list", lab=lab)}


def namespace(host: str) -> str:
    return f"{PREFIX}-h{host.removeprefix('host')}"


def assert_runs_only_on(lab: Path, vm: Vm, host: str) -> None:
    """One QEMU of the instance, in `host`'s namespace; no tap left anywhere else; the
    instance record and the hosts' counts agree."""
    pids = qemu_pids(vm.id)
    assert len(pids) == 1, pids
    assert namespace_of(pids[0]) == namespace(host)
    for other in ("host1", "host2", "host3"):
        if other != host:
            assert vm.id[:8] not in taps(namespace(other)), taps(namespace(other))
    assert host_of(lab, vm) == host
    assert instance_counts(lab)[host] >= 1


def events(lab: Path, ident: str) -> list[str]:
    found = ferry_json("event", "list", "--kind", "migration", "--limit", "200", lab=lab)
    return [e["kind"] for e in found if e.get("migration_id") == ident]


# -- tests -------------------------------------------------------------------------------------


def test_idle_instance_moves_with_a_short_blackout(lab: Path, boot: Callable[..., Vm]) -> None:
    vm = boot("idle")
    before = page(vm.ip)
    mac = ferry_json("instance", "show", vm.name, lab=lab)["ports"][0]["mac"]
    counts = instance_counts(lab)
    heard = metrics(lab)
    pinger = Pinger(vm.ip)
    time.sleep(1)
    m = ferry_json("instance", "migrate", vm.name, "--wait", lab=lab)  # the scheduler picks
    time.sleep(1)
    blackout = pinger.stop()

    print(
        f"\nidle migration {m['source']} -> {m['destination']}: downtime {m['downtime_ms']} ms, "
        f"{(m['bytes_sent'] or 0) / 2**20:.0f} of {m['bytes_total'] / 2**20:.0f} MiB, "
        f"{m['passes']} passes; ping: {blackout}"
    )
    assert m["state"] == "completed", m
    assert m["source"] == "host1" and m["destination"] in ("host2", "host3")
    assert m["downtime_ms"] is not None and m["bytes_total"] >= 128 * 2**20
    assert blackout.lost <= MAX_LOST_PROBES, blackout
    after = page(vm.ip)  # the TCP endpoint answers, at the same IP, without a reboot
    assert (after["ip"], after["boot_id"]) == (before["ip"], before["boot_id"])
    assert_runs_only_on(lab, vm, m["destination"])
    # Same MAC: the record's, and the one the guest answers ARP with from its new host.
    assert ferry_json("instance", "show", vm.name, lab=lab)["ports"][0]["mac"] == mac
    subprocess.run(["ip", "neigh", "flush", "to", vm.ip], check=True)
    assert ping(vm.ip)
    neighbour = subprocess.run(["ip", "neigh", "show", "to", vm.ip], capture_output=True,
                               text=True, check=True).stdout  # fmt: skip
    assert f"lladdr {mac}" in neighbour, neighbour
    now = instance_counts(lab)
    assert now["host1"] == counts["host1"] - 1
    assert now[m["destination"]] == counts[m["destination"]] + 1
    assert events(lab, m["id"]) == [
        "migration.scheduled",
        "migration.preparing",
        "migration.running",
        "migration.completed",
    ]
    # QEMU's events reached the controller through both agents, and were acted on at once.
    now_heard = metrics(lab)
    accepted = now_heard["migration_events_accepted"] - heard["migration_events_accepted"]
    readings = now_heard["migration_event_readings"] - heard["migration_event_readings"]
    print(f"QEMU migration events accepted: {accepted}, readings they caused: {readings}")
    assert accepted >= 2 and readings >= 1, (heard, now_heard)


# A 160 MiB guest rewriting 40 MiB/s of memory, sent at 16 MiB/s (8 MiB/s without the policy):
# plain pre-copy cannot finish. At 16 MiB/s the policy converges it in about 40 s of streaming,
# well inside its 120 s completion timeout (at 8 MiB/s it took 2-3 times as long, and a loaded
# machine once made it miss the timeout).
SLOW = ("max_bandwidth_mib=16",)
PLAIN = ("max_bandwidth_mib=8", "auto_converge=false", "downtime_ladder_ms=[300]")
SHORT = ("min_timeout_s=20", "timeout_s_per_gib=1")


def test_dirtying_instance_converges_under_the_default_policy(
    lab: Path, boot: Callable[..., Vm]
) -> None:
    vm = boot("dirty-ac", dirty=40, flavor="busy")
    before = page(vm.ip)
    m = ended(lab, start(lab, vm, *SLOW, "stall_passes=2")["id"])
    print(
        f"\nauto-converge: {m['passes']} passes, downtime {m['downtime_ms']} ms "
        f"(limit {m['downtime_limit_ms']} ms), {m['bytes_sent'] / 2**20:.0f} MiB sent"
    )
    assert m["state"] == "completed", m
    assert m["passes"] > 2  # it took the policy, not one lucky pass
    after = page(vm.ip)
    assert after["boot_id"] == before["boot_id"]
    assert page(vm.ip, "/dirty")["state"] == "running"  # still dirtying on the new host
    assert_runs_only_on(lab, vm, m["destination"])


def test_without_the_policy_it_ends_by_the_timeout_action(
    lab: Path, boot: Callable[..., Vm]
) -> None:
    vm = boot("dirty-plain", dirty=40, flavor="busy")
    before = page(vm.ip)
    m = ended(lab, start(lab, vm, *PLAIN, *SHORT)["id"])
    assert m["state"] == "failed", m
    assert "did not complete within 20s; aborted by policy" in m["error"]
    assert m["passes"] >= 2
    assert page(vm.ip)["boot_id"] == before["boot_id"]
    assert_runs_only_on(lab, vm, "host1")

    rescue = start(lab, vm, *PLAIN, *SHORT, "postcopy=true", "on_timeout=postcopy")
    m = ended(lab, rescue["id"])
    print(f"\npost-copy rescue: downtime {m['downtime_ms']} ms after {m['passes']} passes")
    assert m["state"] == "completed", m
    assert "migration.postcopy" in events(lab, m["id"])
    assert page(vm.ip)["boot_id"] == before["boot_id"]
    assert_runs_only_on(lab, vm, m["destination"])


def test_abort_mid_flight_keeps_the_instance_on_the_source(
    lab: Path, boot: Callable[..., Vm]
) -> None:
    vm = boot("abort-me")
    before, counts = page(vm.ip), instance_counts(lab)
    m = streaming(lab, start(lab, vm, "max_bandwidth_mib=1")["id"])
    out = ferry("migration", "abort", m["id"][:8], lab=lab)
    assert f"migration {m['id'][:8]} of abort-me" in out.stdout, out.stdout
    m = ended(lab, m["id"], within=60)
    assert (m["state"], m["error"]) == ("cancelled", "aborted on request")
    assert page(vm.ip)["boot_id"] == before["boot_id"] and ping(vm.ip)
    assert_runs_only_on(lab, vm, "host1")
    assert instance_counts(lab) == counts  # the destination's claim is released


def test_destination_qemu_killed_mid_flight(lab: Path, boot: Callable[..., Vm]) -> None:
    vm = boot("lose-dest")
    before, counts = page(vm.ip), instance_counts(lab)
    m = streaming(lab, start(lab, vm, "max_bandwidth_mib=1")["id"])
    target = [p for p in qemu_pids(vm.id) if namespace_of(p) == namespace(m["destination"])]
    assert len(target) == 1, target
    os.kill(target[0], signal.SIGKILL)
    m = ended(lab, m["id"], within=60)
    print(f"\ndestination killed: {m['state']}: {m['error']}")
    assert m["state"] == "failed" and m["error"], m
    assert page(vm.ip)["boot_id"] == before["boot_id"] and ping(vm.ip)
    assert_runs_only_on(lab, vm, "host1")
    assert instance_counts(lab) == counts
    rundir = lab / "hosts" / m["destination"] / "run" / vm.id
    assert not rundir.exists()


def stream_after(m: dict[str, Any], moment: datetime) -> float:
    """Seconds the migration's stream went on after `moment`, by QEMU's own measure of it
    (negative: it had ended before)."""
    end = datetime.fromisoformat(m["started_at"]) + timedelta(milliseconds=m["total_time_ms"])
    return (end - moment).total_seconds()


def test_controller_killed_mid_migration(lab: Path, boot: Callable[..., Vm]) -> None:
    vm = boot("survivor")
    before = page(vm.ip)
    m = streaming(lab, start(lab, vm, "max_bandwidth_mib=4")["id"], at_least=1 * 2**20)
    killed_at = datetime.now(UTC)
    restart_controller(lab)
    m = ended(lab, m["id"])
    went_on = stream_after(m, killed_at)
    print(
        f"\ncontroller restarted mid-migration: {m['state']} {m['error'] or ''}; the stream "
        f"went on {went_on:.1f} s after the kill"
    )
    assert m["state"] == "completed", m
    assert went_on > 0, (m, killed_at)  # the stream was still running at the kill
    assert page(vm.ip)["boot_id"] == before["boot_id"]
    assert_runs_only_on(lab, vm, m["destination"])


def event_listeners(vm: Vm, host: str) -> int:
    """Clients connected to the event monitor of `vm`'s QEMU on `host` (unix sockets are listed
    per network namespace; an accepted connection carries its server's path, state 03)."""
    table = subprocess.run(["ip", "netns", "exec", namespace(host), "cat", "/proc/net/unix"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    rows = [line.split() for line in table.splitlines()[1:]]
    return sum(1 for row in rows if row[-1].endswith(f"/{vm.id}/events.sock") and row[5] == "03")


def test_source_agent_killed_mid_migration(lab: Path, boot: Callable[..., Vm]) -> None:
    """The source's agent dies mid-stream and comes back: QEMU streams on by itself; the new
    agent re-attaches to the guest (and to its events), and the move completes."""
    vm = boot("orphan")
    before = page(vm.ip)
    m = streaming(lab, start(lab, vm, "max_bandwidth_mib=4")["id"], at_least=1 * 2**20)
    record = LabRecord.load(lab)
    assert record is not None
    host = next(h for h in record.hosts if h.name == "host1")
    assert host.pid is not None
    killed_at = datetime.now(UTC)
    os.kill(host.pid, signal.SIGKILL)
    # The agent's end of the event monitor closes with it.
    wait_for("the agent to exit", lambda: event_listeners(vm, "host1") == 0 or None, 10)
    asyncio.run(start_agent(record, host))
    # The controller's next reading of the stream makes the new agent listen again.
    wait_for("the new agent to listen", lambda: event_listeners(vm, "host1") or None, 30)
    m = ended(lab, m["id"])
    went_on = stream_after(m, killed_at)
    print(
        f"\nsource agent restarted mid-migration: {m['state']} {m['error'] or ''}; the stream "
        f"went on {went_on:.1f} s after the kill"
    )
    assert m["state"] == "completed" and m["leftover"] is None, m
    assert went_on > 0, (m, killed_at)  # the stream was still running at the kill
    assert page(vm.ip)["boot_id"] == before["boot_id"]
    assert_runs_only_on(lab, vm, m["destination"])


def test_link_cut_mid_flight_fails_safe_and_cleans_up_once_it_returns(
    lab: Path, boot: Callable[..., Vm]
) -> None:
    """The destination's management link goes down mid-stream: no bytes move, the policy's
    no-progress timeout aborts, the source keeps the guest; the destination's incoming copy is
    removed once its agent answers again."""
    vm = boot("cut-off")
    before, counts = page(vm.ip), instance_counts(lab)
    m = streaming(lab, start(lab, vm, "max_bandwidth_mib=1", "no_progress_s=5")["id"])
    link = f"{PREFIX}-m{m['destination'].removeprefix('host')}"  # root side of its veth
    subprocess.run(["ip", "link", "set", link, "down"], check=True)
    try:
        m = ended(lab, m["id"], within=90)
        print(f"\nlink cut: {m['state']}: {m['error']} (leftover: {m['leftover']})")
        assert m["state"] == "failed" and "no bytes moved for 5s" in m["error"], m
        assert m["leftover"] == "destination"
        assert page(vm.ip)["boot_id"] == before["boot_id"] and ping(vm.ip)
        assert ferry_json("instance", "show", vm.name, lab=lab)["state"] == "running"
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)

    def cleaned() -> dict[str, Any] | None:
        now = migration(lab, m["id"])
        return now if now["leftover"] is None else None

    wait_for("the destination's copy to be removed", cleaned, 90)
    assert "migration.cleaned" in events(lab, m["id"])
    assert_runs_only_on(lab, vm, "host1")
    assert instance_counts(lab) == counts
