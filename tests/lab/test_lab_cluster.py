"""`ferry lab` with real QEMU guests in network namespaces: boot, reach, restart, delete, down.

Needs root and qemu-system-x86_64 (CI installs both). One lab is shared by the module's tests,
in order; teardown runs `ferry lab down` even when a test fails and checks nothing is left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.live import FERRY
from tests.lab import support
from tests.lab.support import answers, ferry, ping, running_lab

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, taps)"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU installed"),
]
PREFIX = "flt"  # not the default 'fry', so a developer's own lab is never touched


def instances(lab: Path) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(
        ferry("instance", "list", "-f", "json", lab=lab).stdout
    )
    return result


def qemu_pids(lab: Path) -> list[int]:
    return support.qemu_pids(str(lab))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with running_lab(tmp_path_factory.mktemp("lab"), PREFIX, hosts=2, instances=2) as lab_dir:
        yield lab_dir


def test_instances_boot_on_both_hosts_and_answer_ping(lab: Path) -> None:
    listed = instances(lab)
    assert [i["state"] for i in listed] == ["running", "running"], listed
    assert {i["host"] for i in listed} == {"host1", "host2"}  # spread, one each
    for inst in listed:
        assert answers(inst["ports"][0]["ip"]), f"{inst['name']} does not answer ping"
    assert len(qemu_pids(lab)) == 2


def test_agent_restart_keeps_instances_running(lab: Path) -> None:
    record = json.loads((lab / "lab.json").read_text())
    host1 = next(h for h in record["hosts"] if h["name"] == "host1")
    before = qemu_pids(lab)
    os.kill(host1["pid"], signal.SIGKILL)
    restarted = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            host1["namespace"],
            FERRY,
            "agent",
            "serve",
            "--config",
            str(lab / "hosts" / "host1" / "agent.toml"),
            "--log-level",
            "warning",
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    host1["pid"] = restarted.pid
    (lab / "lab.json").write_text(json.dumps(record))
    time.sleep(6)  # a few heartbeats of the new agent
    assert sorted(qemu_pids(lab)) == sorted(before)
    assert [i["state"] for i in instances(lab)] == ["running", "running"]
    vm = next(i for i in instances(lab) if i["host"] == "host1")
    assert ping(vm["ports"][0]["ip"])


def test_delete_removes_process_and_tap(lab: Path) -> None:
    vm = next(i for i in instances(lab) if i["host"] == "host2")
    ferry("instance", "delete", vm["name"], "--wait", lab=lab)
    assert [i["name"] for i in instances(lab)] == [i for i in ("vm1", "vm2") if i != vm["name"]]
    assert len(qemu_pids(lab)) == 1
    taps = subprocess.run(
        ["ip", "netns", "exec", f"{PREFIX}-h2", "ip", "-o", "link", "show", "type", "tun"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert taps.strip() == "", taps
    assert not ping(vm["ports"][0]["ip"], count=1)


def test_agent_in_namespace_admits_only_the_controller(lab: Path) -> None:
    host = json.loads(ferry("host", "show", "host1", "-f", "json", lab=lab).stdout)
    url = f"{host['agent_url']}/v1/facts"
    pki = lab / "pki"
    anonymous = ssl.create_default_context(cafile=str(pki / "ca-cert.pem"))
    with pytest.raises(httpx.TransportError):
        httpx.get(url, verify=anonymous, timeout=10)
    other_host = ssl.create_default_context(cafile=str(pki / "ca-cert.pem"))
    issued = pki / "issued" / "host2"
    other_host.load_cert_chain(str(issued / "cert.pem"), str(issued / "key.pem"))
    with pytest.raises(httpx.TransportError):
        httpx.get(url, verify=other_host, timeout=10)
    controller = ssl.create_default_context(cafile=str(pki / "ca-cert.pem"))
    issued = pki / "issued" / "controller"
    controller.load_cert_chain(str(issued / "cert.pem"), str(issued / "key.pem"))
    facts = httpx.get(url, verify=controller, timeout=10).json()
    assert (facts["host"], facts["driver"], facts["machine_type"]) == (
        "host1",
        "qemu",
        "pc-q35-7.2",
    )
    # The real driver's facts (the machine's), and what the agent registered: the lab's
    # configured inventory (every lab host the same size), the driver's capabilities.
    assert facts["cpu_model"] == "qemu64" and facts["qemu_version"].startswith("7.")
    assert facts["vcpus"] == os.cpu_count() and facts["ram_mb"] > 1024 and facts["disk_gb"] > 0
    inventory = host["inventory"]
    assert (inventory["vcpus"], inventory["ram_mb"], inventory["disk_gb"]) == (2, 2048, 20)
    capabilities = host["capabilities"]
    assert capabilities["qemu_version"] == facts["qemu_version"]
    assert (capabilities["cpu_model"], capabilities["machine_type"]) == ("qemu64", "pc-q35-7.2")
    assert capabilities["networks"] == ["lab"]


def test_status_names_every_process_and_link(lab: Path) -> None:
    record = json.loads((lab / "lab.json").read_text())
    out = ferry("lab", "status", "--dir", str(lab), lab=lab).stdout
    assert f"pid {record['controller_pid']} running" in out
    for host in record["hosts"]:
        assert f"{host['name']} {host['namespace']}" in out
        assert f"agent pid {host['pid']} running" in out


def test_down_after_a_crash_leaves_nothing(lab: Path) -> None:
    """Last of the module: every process of the lab SIGKILLed (a crashed lab), then `ferry lab
    down` from its record still removes namespaces, taps and QEMU processes."""
    record = json.loads((lab / "lab.json").read_text())
    guests = qemu_pids(lab)
    assert guests
    for pid in [record["controller_pid"], *(h["pid"] for h in record["hosts"])]:
        os.kill(pid, signal.SIGKILL)
    gone = ferry("lab", "status", "--dir", str(lab), lab=lab).stdout
    assert "running" not in gone.split("\n")[0] and "gone" in gone
    ferry("lab", "down", "--dir", str(lab), "--prefix", PREFIX, lab=lab)
    assert support.namespaces(PREFIX) == [] and qemu_pids(lab) == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert f"{PREFIX}-" not in links.stdout
