"""Local disks moved live: a 3-host lab whose hosts keep instance disks on their own storage.

Each instance boots from its own disk of the lab image and writes checksummed, fsynced records
to it all along. A drain of host1 copies every disk to its destination (NBD over TLS, mirrored
while the guest writes), then its RAM; afterwards every instance answers on its address from
another host, every record it wrote (before and during the move) reads back intact from the
copy, `qemu-img check` passes on every copy, host1 keeps no disk of theirs, and a capture of
host1's link shows TLS on the migration and disk ports (the NBD connections open with NBD's
fixed STARTTLS exchange in clear, as NBD's TLS is specified; nothing of a disk crosses outside
TLS). Then the faults, each
mid-mirror: an abort, the source agent SIGKILLed and restarted, the destination QEMU killed,
and the destination's link cut; each ends with one running copy and a disk that verifies.

Needs root, qemu-system-x86_64 and tcpdump.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ferry.lab.cluster import LabRecord
from ferry.lab.lifecycle import start_agent
from tests.lab.capture import capture, read
from tests.lab.support import (
    Pinger,
    answers,
    ended,
    ferry,
    ferry_json,
    migration,
    namespace_of,
    page,
    ping,
    qemu_pids,
    restart_controller,
    running_lab,
    wait_for,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"), reason="the lab needs root"),
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None and not os.environ.get("CI"),
        reason="no QEMU installed",
    ),
]
PREFIX = "flx"
COUNT = 4
WRITE_KIBPS = 256
MIB = 1 << 20
PORTS = (61000, 62999)  # migration streams and, 1000 above them, the disks' NBD exports


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if shutil.which("tcpdump") is None:
        pytest.fail("tcpdump is not installed (scripts/setup.sh installs it)")
    with running_lab(tmp_path_factory.mktemp("lab"), PREFIX, hosts=3, storage="local") as d:
        yield d


@dataclass
class Vm:
    name: str
    id: str
    ip: str


def boot(lab: Path, name: str, kibps: int = WRITE_KIBPS) -> Vm:
    ferry("instance", "create", name, "--flavor", "tiny", "--network", "lab", "--image", "lab",
          "--disk-write", str(kibps), "--host", "host1", "--wait", lab=lab)  # fmt: skip
    inst = ferry_json("instance", "show", name, lab=lab)
    vm = Vm(name, inst["id"], inst["ports"][0]["ip"])
    assert answers(vm.ip), f"{name} does not answer at {vm.ip}"
    return vm


def disk(lab: Path, host: str, vm: Vm) -> Path:
    return lab / "hosts" / host / "disks" / vm.id / "disk.qcow2"


def written(vm: Vm) -> int:
    return int(page(vm.ip, "/cgi-bin/disk.cgi?status")["written"])


def verify(vm: Vm) -> None:
    """Every record the guest wrote reads back intact, from the disk it runs on now."""
    verified = page(vm.ip, "/cgi-bin/disk.cgi")
    assert int(verified["bad"]) == 0 and int(verified["records"]) > 0, verified
    assert int(verified["ok"]) == int(verified["records"]), verified


def qemu_img_check(path: Path) -> None:
    argv = ["qemu-img", "check", "-U", "-f", "qcow2", str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def mirroring(lab: Path, vm: Vm, *policy: str) -> dict[str, Any]:
    """Start a migration of `vm` and wait until its disk copy is under way, not yet in sync."""
    args = [arg for pair in ("max_bandwidth_mib=1", *policy) for arg in ("--policy", pair)]
    ident = ferry_json("instance", "migrate", vm.name, *args, lab=lab)["id"]

    def probe() -> dict[str, Any] | None:
        m = migration(lab, ident)
        assert m["state"] in ("scheduled", "preparing", "running"), m
        copy = m.get("disk") or {}
        assert not copy.get("ready"), m  # the copy must still be going on
        return m if copy.get("copied_bytes", 0) >= MIB else None

    return wait_for("the disk copy to be under way", probe, 90)


def runs_only_on(lab: Path, vm: Vm, host: str) -> None:
    """One QEMU of the instance, in `host`'s namespace, and its disk there alone."""
    pids = qemu_pids(vm.id)
    assert len(pids) == 1 and namespace_of(pids[0]) == f"{PREFIX}-h{host[4:]}", pids
    assert ferry_json("instance", "show", vm.name, lab=lab)["host"] == host
    assert [h for h in ("host1", "host2", "host3") if disk(lab, h, vm).exists()] == [host]


def test_a_drain_copies_local_disks_live_over_tls_only(lab: Path, tmp_path: Path) -> None:
    vms = [boot(lab, f"d{n}") for n in range(COUNT)]
    before = {vm.name: written(vm) for vm in vms}
    pcap = tmp_path / "host1.pcap"
    pingers = {vm.name: Pinger(vm.ip) for vm in vms}
    try:
        with capture(f"{PREFIX}-m1", pcap, PORTS):
            ferry("host", "maintenance", "enter", "host1", "--reason", "disks", "--wait",
                  lab=lab)  # fmt: skip
    finally:
        blackouts = {n: p.stop() for n, p in pingers.items()}
    status = ferry_json("host", "maintenance", "status", "host1", lab=lab)
    moves = {m["instance"]: m for m in status["migrations"] if m["state"] == "completed"}
    assert sorted(moves) == sorted(vm.name for vm in vms), status
    for vm in vms:
        host = ferry_json("instance", "show", vm.name, lab=lab)["host"]
        assert host in ("host2", "host3") and answers(vm.ip, within=30), (vm, host)
        assert written(vm) > before[vm.name], "the guest stopped writing"
        verify(vm)
        qemu_img_check(disk(lab, host, vm))
        assert not disk(lab, "host1", vm).parent.exists(), "host1 kept the disk"
        copy = moves[vm.name]["disk"]
        assert copy["ready"] and copy["copied_bytes"] >= copy["total_bytes"] > MIB, copy
    flows = read(pcap, PORTS)
    disks, streams = flows.connections(62000, 62999), flows.connections(61000, 61999)
    print(
        f"\n{flows.segments} segments on {len(flows.flows)} flows; disks copied (MiB): "
        + ", ".join(f"{n} {m['disk']['copied_bytes'] / MIB:.1f}" for n, m in moves.items())
        + "; blackouts (ms): "
        + ", ".join(f"{n} {b.ms:.0f}" for n, b in blackouts.items())
    )
    assert len(disks) == COUNT and len(streams) == COUNT, flows.flows.keys()  # one each
    # RAM streams and disk copies alike are TLS from their first byte (the disks' NBD runs in
    # a TLS tunnel): no NBD negotiation and no QEMU stream magic in clear, anywhere.
    assert flows.not_tls(61000, 62999) == {}, flows.not_tls(61000, 62999)
    assert flows.clear == [] and flows.options == [], (flows.clear, flows.options)
    assert flows.never_tls(61000, 62999) == set(), flows.never_tls(61000, 62999)
    ferry("host", "maintenance", "exit", "host1", lab=lab)
    for vm in vms:
        ferry("instance", "delete", vm.name, "--wait", lab=lab)


@pytest.fixture
def vm(lab: Path, request: pytest.FixtureRequest) -> Iterator[Vm]:
    """An instance on host1 writing to its disk (16 MiB of records and more), deleted after."""
    made = boot(lab, request.node.name.removeprefix("test_")[:20].replace("_", "-"))
    wait_for("its writer to run", lambda: written(made) >= 8 or None, 60)
    yield made
    ferry("instance", "delete", made.name, "--wait", "--timeout", "60", lab=lab, check=False)


def kept_on_host1(lab: Path, vm: Vm, m: dict[str, Any], boot_id: str) -> None:
    assert page(vm.ip)["boot_id"] == boot_id and ping(vm.ip)
    runs_only_on(lab, vm, "host1")
    verify(vm)
    assert not disk(lab, m["destination"], vm).parent.exists(), "the partial copy is left"


def test_abort_mid_mirror(lab: Path, vm: Vm) -> None:
    boot_id = page(vm.ip)["boot_id"]
    m = mirroring(lab, vm)
    ferry("migration", "abort", m["id"][:8], lab=lab)
    m = ended(lab, m["id"], within=60)
    assert (m["state"], m["error"]) == ("cancelled", "aborted on request"), m
    kept_on_host1(lab, vm, m, boot_id)


def test_destination_qemu_killed_mid_mirror(lab: Path, vm: Vm) -> None:
    boot_id = page(vm.ip)["boot_id"]
    m = mirroring(lab, vm)
    target = [p for p in qemu_pids(vm.id) if namespace_of(p) == f"{PREFIX}-h{m['destination'][4:]}"]
    assert len(target) == 1, target
    os.kill(target[0], signal.SIGKILL)
    m = ended(lab, m["id"], within=90)
    print(f"\ndestination killed mid-mirror: {m['state']}: {m['error']}")
    assert m["state"] == "failed" and m["error"], m
    kept_on_host1(lab, vm, m, boot_id)


def test_source_agent_killed_mid_mirror_and_restarted(lab: Path, vm: Vm) -> None:
    boot_id = page(vm.ip)["boot_id"]
    m = mirroring(lab, vm, "max_bandwidth_mib=2")
    record = LabRecord.load(lab)
    assert record is not None
    host = next(h for h in record.hosts if h.name == "host1")
    assert host.pid is not None
    os.kill(host.pid, signal.SIGKILL)
    time.sleep(2)  # the copy goes on in QEMU while no agent runs
    asyncio.run(start_agent(record, host))
    m = ended(lab, m["id"])
    print(f"\nsource agent restarted mid-mirror: {m['state']} {m['error'] or ''}")
    assert m["state"] == "completed" and m["leftover"] is None, m
    assert page(vm.ip)["boot_id"] == boot_id
    runs_only_on(lab, vm, m["destination"])
    verify(vm)
    qemu_img_check(disk(lab, m["destination"], vm))


def test_controller_killed_mid_mirror_and_restarted(lab: Path, vm: Vm) -> None:
    """The copy goes on in QEMU while no controller runs; the controller started again asks
    both ends and sees the move through: one running copy, the disk intact."""
    boot_id = page(vm.ip)["boot_id"]
    m = mirroring(lab, vm, "max_bandwidth_mib=2")
    restart_controller(lab)
    m = ended(lab, m["id"])
    print(f"\ncontroller restarted mid-mirror: {m['state']} {m['error'] or ''}")
    assert m["state"] == "completed" and m["leftover"] is None, m
    assert m["disk"]["ready"] and m["disk"]["copied_bytes"] >= m["disk"]["total_bytes"] > 0, m
    assert page(vm.ip)["boot_id"] == boot_id
    runs_only_on(lab, vm, m["destination"])
    verify(vm)
    qemu_img_check(disk(lab, m["destination"], vm))
    assert not disk(lab, "host1", vm).exists()


def test_link_cut_mid_mirror(lab: Path, vm: Vm) -> None:
    boot_id = page(vm.ip)["boot_id"]
    m = mirroring(lab, vm, "no_progress_s=5")
    link = f"{PREFIX}-m{m['destination'][4:]}"
    subprocess.run(["ip", "link", "set", link, "down"], check=True)
    try:
        m = ended(lab, m["id"], within=90)
        print(f"\nlink cut mid-mirror: {m['state']}: {m['error']} (leftover {m['leftover']})")
        assert m["state"] == "failed" and "no bytes moved for 5s" in m["error"], m
        assert page(vm.ip)["boot_id"] == boot_id and ping(vm.ip)
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
    wait_for("the partial copy to go", lambda: migration(lab, m["id"])["leftover"] is None or None)
    kept_on_host1(lab, vm, m, boot_id)
