"""Live migration between two real lab hosts, over QEMU's native TLS, driven through the agents'
HTTPS APIs with the controller's certificate (the calls the controller's workflow makes).

Needs root and qemu-system-x86_64. One lab (prefix "flm") is shared by the module's tests; each
test boots its own instance on host1. Teardown runs `ferry lab down` even when a test fails and
checks that no namespace and no QEMU of the lab is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.pki.ca import init_ca, issue
from tests.lab.support import (
    Pinger,
    answers,
    ferry,
    ferry_json,
    namespace_of,
    page,
    ping,
    qemu_pids,
    running_lab,
    taps,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, taps)"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU installed"),
]
PREFIX = "flm"  # not the default 'fry' nor test_lab_cluster's 'flt'
GATEWAY = "198.19.0.1"
MAX_LOST_PROBES = 50  # 1 s: generous, TCG is slow and the machine may be busy
MIB = 2**20


# -- the lab -----------------------------------------------------------------------------------


@dataclass
class Lab:
    dir: Path
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)  # `ferry host show` JSON
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        pki = self.dir / "pki"
        tls = ssl.create_default_context(cafile=str(pki / "ca-cert.pem"))
        issued = pki / "issued" / "controller"
        tls.load_cert_chain(str(issued / "cert.pem"), str(issued / "key.pem"))
        self.http = httpx.Client(verify=tls, timeout=30)

    def agent(self, host: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call `host`'s agent as the controller does."""
        return self.http.request(method, f"{self.hosts[host]['agent_url']}{path}", **kwargs)

    def guests(self, host: str) -> dict[str, dict[str, Any]]:
        response = self.agent(host, "GET", "/v1/guests")
        response.raise_for_status()
        return {g["id"]: g for g in response.json()}

    def address(self, host: str) -> str:
        return str(self.hosts[host]["migration_address"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory.mktemp("lab"), PREFIX, hosts=2) as lab_dir:
        hosts = {name: ferry_json("host", "show", name, lab=lab_dir) for name in ("host1", "host2")}
        the_lab = Lab(lab_dir, hosts)
        yield the_lab
        the_lab.http.close()


# -- guests ------------------------------------------------------------------------------------


@dataclass
class Guest:
    name: str
    ip: str
    spec: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.spec["id"])


@pytest.fixture
def guest(lab: Lab, request: pytest.FixtureRequest) -> Iterator[Guest]:
    """An instance booted on host1 that answers ping; removed from wherever it ends up."""
    name = f"vm-{request.node.name.removeprefix('test_')[:20].replace('_', '-')}"
    ferry("instance", "create", name, "--flavor", "tiny", "--network", "lab",
          "--host", "host1", "--wait", lab=lab.dir)  # fmt: skip
    inst = json.loads(ferry("instance", "show", name, "-f", "json", lab=lab.dir).stdout)
    ip = inst["ports"][0]["ip"]
    spec = {
        "id": inst["id"],
        "name": inst["name"],
        "vcpus": inst["vcpus"],
        "ram_mb": inst["ram_mb"],
        "ports": [
            {"network": p["network"], "mac": p["mac"], "ip": f"{p['ip']}/16", "gateway": GATEWAY}
            for p in inst["ports"]
        ],
    }
    try:
        assert answers(ip), f"{name} does not answer ping"
        yield Guest(name, ip, spec)
    finally:
        ferry("instance", "delete", name, "--wait", "--timeout", "30", lab=lab.dir, check=False)
        for host in lab.hosts:
            lab.agent(host, "DELETE", f"/v1/guests/{inst['id']}")


# -- migration over the agents' APIs -----------------------------------------------------------


def params(max_bandwidth: int = 100 * MIB) -> dict[str, Any]:
    return {"max_bandwidth_bytes": max_bandwidth, "downtime_limit_ms": 300}


def prepare(lab: Lab, spec: dict[str, Any], port: int, host: str = "host2") -> dict[str, Any]:
    body = {"spec": spec, "port": port, "params": params()}
    response = lab.agent(host, "POST", f"/v1/guests/{spec['id']}/incoming", json=body)
    assert response.status_code == 201, response.text
    report: dict[str, Any] = response.json()
    return report


def start(lab: Lab, guest: Guest, port: int, max_bandwidth: int = 100 * MIB) -> None:
    address = lab.address("host2")
    body = {
        "address": address,
        "port": port,
        "tls_hostname": address,  # host certificates carry the management IP as an IP SAN
        "params": params(max_bandwidth),
    }
    response = lab.agent("host1", "POST", f"/v1/guests/{guest.id}/migrate", json=body)
    assert response.status_code == 202, response.text


def progress(lab: Lab, instance_id: str, host: str = "host1") -> dict[str, Any]:
    response = lab.agent(host, "GET", f"/v1/guests/{instance_id}/migration")
    assert response.status_code == 200, response.text
    reading: dict[str, Any] = response.json()
    return reading


def follow(lab: Lab, instance_id: str, host: str = "host1", within: float = 120) -> list[Any]:
    """Readings every 0.1 s until the migration is finished."""
    readings = [progress(lab, instance_id, host)]
    deadline = time.monotonic() + within
    while readings[-1]["status"] not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"migration still {readings[-1]}"
        time.sleep(0.1)
        readings.append(progress(lab, instance_id, host))
    return readings


def abort(lab: Lab, instance_id: str, host: str, role: str) -> None:
    response = lab.agent(
        host, "POST", f"/v1/guests/{instance_id}/migration/abort", params={"role": role}
    )
    assert response.status_code == 204, response.text


def assert_only_on(lab: Lab, instance_id: str, host: str) -> None:
    pids = qemu_pids(instance_id)
    assert len(pids) == 1, pids
    assert namespace_of(pids[0]) == f"{PREFIX}-h{host.removeprefix('host')}"


def assert_target_gone(lab: Lab, instance_id: str, host: str = "host2") -> None:
    ns = f"{PREFIX}-h{host.removeprefix('host')}"
    assert instance_id not in lab.guests(host)
    assert [p for p in qemu_pids(instance_id) if namespace_of(p) == ns] == []
    assert taps(ns) == ""
    assert not (lab.dir / "hosts" / host / "run" / instance_id).exists()


# -- tests -------------------------------------------------------------------------------------


def test_live_migration_moves_the_guest_without_a_reboot(lab: Lab, guest: Guest) -> None:
    before = page(guest.ip)
    target = prepare(lab, guest.spec, 49152)
    assert target["power"] == "incoming"
    assert lab.guests("host2")[guest.id]["power"] == "incoming"  # not an ordinary guest yet
    pinger = Pinger(guest.ip)
    time.sleep(1)
    started = time.monotonic()
    start(lab, guest, 49152)
    readings = follow(lab, guest.id)
    migrated = time.monotonic() - started
    final = readings[-1]
    assert final["status"] == "completed", final
    finished = lab.agent("host2", "POST", f"/v1/guests/{guest.id}/migration/finish-destination")
    assert finished.status_code == 200, finished.text
    assert finished.json()["power"] == "running"
    gone = lab.agent("host1", "POST", f"/v1/guests/{guest.id}/migration/finish-source")
    assert gone.status_code == 204, gone.text
    time.sleep(1)
    blackout = pinger.stop()

    print(
        f"\nmigration: {migrated:.2f} s wall, QEMU total {final['total_time_ms']} ms, "
        f"downtime {final['downtime_ms']} ms, {final['transferred_bytes'] / MIB:.1f} MiB "
        f"of {final['total_bytes'] / MIB:.0f} MiB in {final['passes']} passes; "
        f"ping: {blackout}"
    )
    assert any(r["total_bytes"] > 0 and r["transferred_bytes"] > 0 for r in readings)
    assert blackout.lost <= MAX_LOST_PROBES, blackout
    after = page(guest.ip)
    assert after["boot_id"] == before["boot_id"]  # migrated, not rebooted
    assert after["ip"] == before["ip"] and after["name"] == guest.name
    assert ping(guest.ip)
    assert_only_on(lab, guest.id, "host2")
    assert guest.id not in lab.guests("host1")
    assert lab.guests("host2")[guest.id]["power"] == "running"
    assert taps(f"{PREFIX}-h1") == ""
    # Both finishing calls may be retried after a crash: they are idempotent.
    again = lab.agent("host2", "POST", f"/v1/guests/{guest.id}/migration/finish-destination")
    assert again.status_code == 200 and again.json()["power"] == "running"
    again = lab.agent("host1", "POST", f"/v1/guests/{guest.id}/migration/finish-source")
    assert again.status_code == 204


@dataclass
class Rogue:
    """A QEMU in host1's namespace with credentials of its own: not a cluster host."""

    run: Path
    pid: int = 0

    def qmp(self, *commands: tuple[str, dict[str, Any]]) -> list[Any]:
        """Run QMP commands in one session; their results (or errors), in order."""
        results = []
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(self.run / "qmp.sock"))
            stream = sock.makefile("rw")
            stream.readline()  # the greeting
            for command, args in (("qmp_capabilities", {}), *commands):
                stream.write(json.dumps({"execute": command, "arguments": args}) + "\n")
                stream.flush()
                while "event" in (reply := json.loads(stream.readline())):
                    pass
                results.append(reply.get("return", reply.get("error")))
        return results[1:]


def creds_dir(dest: Path, ca_pems: list[Path], cert: Path, key: Path) -> Path:
    dest.mkdir(parents=True)
    (dest / "ca-cert.pem").write_bytes(b"".join(p.read_bytes() for p in ca_pems))
    for end in ("client", "server"):
        (dest / f"{end}-cert.pem").write_bytes(cert.read_bytes())
        (dest / f"{end}-key.pem").write_bytes(key.read_bytes())
        (dest / f"{end}-key.pem").chmod(0o600)
    return dest


@pytest.fixture
def rogue(lab: Lab) -> Iterator[Rogue]:
    run = lab.dir / "rogue"
    run.mkdir()
    intruder = Rogue(run)
    argv = [
        "ip", "netns", "exec", f"{PREFIX}-h1", "qemu-system-x86_64",
        "-machine", "pc-q35-7.2", "-accel", "tcg", "-cpu", "qemu64", "-m", "128",
        "-nodefaults", "-display", "none", "-qmp", f"unix:{run / 'qmp.sock'},server=on,wait=off",
        "-pidfile", str(run / "qemu.pid"), "-daemonize",
    ]  # fmt: skip
    subprocess.run(argv, check=True, timeout=30)
    intruder.pid = int((run / "qemu.pid").read_text())
    try:
        yield intruder
    finally:
        os.kill(intruder.pid, signal.SIGKILL)
        for _ in range(50):
            if not Path(f"/proc/{intruder.pid}").exists():
                break
            time.sleep(0.1)


def rogue_migrate(intruder: Rogue, creds: Path, creds_id: str, address: str, port: int) -> str:
    """Send the rogue's state to the destination; its error once the migration failed."""
    intruder.qmp(
        ("object-add", {"qom-type": "tls-creds-x509", "id": creds_id, "dir": str(creds),
                        "endpoint": "client", "verify-peer": True}),
        ("migrate-set-parameters", {"tls-creds": creds_id, "tls-hostname": address}),
        ("migrate", {"uri": f"tcp:{address}:{port}"}),
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info, state = intruder.qmp(("query-migrate", {}), ("query-status", {}))
        if info.get("status") in ("completed", "failed", "cancelled"):
            assert info["status"] == "failed", info
            assert state["status"] == "running", state  # the source keeps running
            return str(info.get("error-desc", ""))
        time.sleep(0.2)
    raise AssertionError("the rogue migration neither failed nor finished")


def test_destination_admits_only_cluster_hosts(lab: Lab, rogue: Rogue, tmp_path: Path) -> None:
    instance_id = str(uuid.uuid4())
    spec = {
        "id": instance_id,
        "name": "target",
        "vcpus": 1,
        "ram_mb": 128,
        "ports": [{"network": "lab", "mac": "52:54:00:fe:00:02", "ip": "198.19.0.250/16"}],
    }
    assert prepare(lab, spec, 49153)["power"] == "incoming"
    address = lab.address("host2")
    pki = lab.dir / "pki"
    # A certificate of another CA (it trusts the cluster CA too, so only the destination judges).
    other = tmp_path / "other-pki"
    init_ca(other, "Other CA")
    stranger = issue(other, "host9", ips=[address])
    creds = creds_dir(
        tmp_path / "stranger", [other / "ca-cert.pem", pki / "ca-cert.pem"],
        stranger.cert, stranger.key,
    )  # fmt: skip
    error = rogue_migrate(rogue, creds, "stranger", address, 49153)
    print(f"\nforeign CA: {error}")
    # The cluster CA's controller certificate: verified, but not a host (tls-authz denies it).
    controller = pki / "issued" / "controller"
    creds = creds_dir(
        tmp_path / "controller", [pki / "ca-cert.pem"],
        controller / "cert.pem", controller / "key.pem",
    )  # fmt: skip
    error = rogue_migrate(rogue, creds, "controller", address, 49153)
    print(f"controller certificate: {error}")

    assert lab.guests("host2")[instance_id]["power"] == "incoming"  # still waiting for a host
    abort(lab, instance_id, "host2", "destination")
    assert_target_gone(lab, instance_id)
    abort(lab, instance_id, "host2", "destination")  # idempotent


def test_abort_mid_flight_keeps_the_guest_on_the_source(lab: Lab, guest: Guest) -> None:
    before = page(guest.ip)
    prepare(lab, guest.spec, 49154)
    start(lab, guest, 49154, max_bandwidth=1 * MIB)  # slow: still running when we abort
    deadline = time.monotonic() + 30
    while (reading := progress(lab, guest.id))["transferred_bytes"] < 2 * MIB:
        assert reading["status"] in ("setup", "active"), reading
        assert time.monotonic() < deadline, reading
        time.sleep(0.2)
    abort(lab, guest.id, "host1", "source")
    abort(lab, guest.id, "host2", "destination")
    assert progress(lab, guest.id)["status"] == "cancelled"
    abort(lab, guest.id, "host1", "source")  # idempotent on both ends
    abort(lab, guest.id, "host2", "destination")

    assert lab.guests("host1")[guest.id]["power"] == "running"
    assert ping(guest.ip)
    assert page(guest.ip)["boot_id"] == before["boot_id"]
    assert_only_on(lab, guest.id, "host1")
    assert_target_gone(lab, guest.id)
