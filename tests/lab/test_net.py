"""The lab network on real namespaces, bridges, veths, taps and tbf (root required).

Every lab here has a random prefix `ft???`, so runs never collide by name with a real lab (`fry`)
or with each other; the address range 198.18.0.0/15 is shared by all labs of a machine, so these
tests skip while another lab holds it. Every lab is torn down in a finalizer, and the finalizer
checks with iproute2 (not with the code under test) that nothing of the prefix remains.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import shutil
import string
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.agent.net import tap_name
from ferry.lab.net import (
    LabNetError,
    LabNetPlan,
    create_lab,
    set_link_speed,
    status,
    teardown,
)
from ferry.lab.net_plan import LAB_RANGE


def _skip_reason() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "lab network tests need root on Linux (namespaces, bridges, tc)"
    if shutil.which("ip") is None or shutil.which("tc") is None or shutil.which("ping") is None:
        return "lab network tests need iproute2 (ip, tc) and ping"
    out = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True)
    for link in json.loads(out.stdout):
        for addr in link.get("addr_info", []):
            if ipaddress.IPv4Address(addr["local"]) in LAB_RANGE:
                return f"198.18.0.0/15 is in use on {link['ifname']} (a lab is running)"
    return None


_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

UUID1 = "3f2a9c01-d2e4-4e5f-8a9b-0c1d2e3f4a5b"
UUID2 = "7c0ffee0-1234-4e5f-8a9b-0c1d2e3f4a5b"
GUEST_MAC = "52:54:00:00:00:50"
GUEST_IP = "198.19.0.50"


def _prefix() -> str:
    return "ft" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(3))


def _run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def _in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def _ping(address: str, ns: str | None = None, wait: int = 3) -> bool:
    argv = ["ping", "-n", "-c", "1", "-W", str(wait), address]
    return _run(*(_in_ns(ns, *argv) if ns else argv), check=False).returncode == 0


def _python_in_ns(ns: str, code: str) -> str:
    """Run `code` in a fresh interpreter inside namespace `ns` (as the agent runs)."""
    result = _run(*_in_ns(ns, sys.executable, "-c", textwrap.dedent(code)), check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _leftovers(prefix: str) -> list[str]:
    """Namespaces and root links named `<prefix>-*`, seen by iproute2."""
    links = json.loads(_run("ip", "-j", "link").stdout)
    names = [link["ifname"] for link in links]
    namespaces = [line.split()[0] for line in _run("ip", "netns", "list").stdout.splitlines()]
    return [n for n in names + namespaces if n.startswith(f"{prefix}-")]


def _qdisc(dev: str, ns: str | None = None) -> dict[str, object]:
    argv = ["tc", "-j", "qdisc", "show", "dev", dev]
    qdiscs = json.loads(_run(*(_in_ns(ns, *argv) if ns else argv)).stdout)
    roots = [q for q in qdiscs if q.get("root")]
    assert len(roots) == 1, qdiscs
    root: dict[str, object] = roots[0]
    return root


def _link(name: str, ns: str) -> dict[str, object]:
    links: list[dict[str, object]] = json.loads(_run("ip", "-n", ns, "-j", "-d", "link").stdout)
    found = [link for link in links if link["ifname"] == name]
    assert found, f"{name} not in {ns}"
    return found[0]


def _create_or_skip(plan: LabNetPlan) -> None:
    try:
        asyncio.run(create_lab(plan))
    except LabNetError as exc:
        if "is in the lab range" in str(exc):  # another lab took the range since collection
            pytest.skip(str(exc))
        raise


@pytest.fixture
def netlab() -> Iterator[LabNetPlan]:
    """A fresh two-host lab with 100 Mbit/s links; always torn down."""
    plan = LabNetPlan(prefix=_prefix(), hosts=2, link_mbit=100)
    try:
        _create_or_skip(plan)
        yield plan
    finally:
        asyncio.run(teardown(plan.prefix))
        assert _leftovers(plan.prefix) == []


# -- management fabric -------------------------------------------------------------------------


def test_management_fabric_connects_root_and_hosts(netlab: LabNetPlan) -> None:
    assert netlab.mgmt_ip(1) == "198.18.0.11"
    assert _ping("198.18.0.11")
    assert _ping("198.18.0.12")
    assert _ping("198.18.0.12", ns=netlab.host_ns(1))
    assert _ping(netlab.controller_ip, ns=netlab.host_ns(2))
    # no default route: nothing leaves the machine from a host namespace
    routes = _run("ip", "-n", netlab.host_ns(1), "-4", "route").stdout
    assert "default" not in routes
    assert "198.18.0.0/16 dev mgmt0" in routes


def test_links_are_shaped_in_both_directions(netlab: LabNetPlan) -> None:
    for dev, ns in (("mgmt0", netlab.host_ns(1)), (netlab.mgmt_root_veth(2), None)):
        qdisc = _qdisc(dev, ns)
        assert qdisc["kind"] == "tbf"
        options = qdisc["options"]
        assert isinstance(options, dict)
        assert options["rate"] == 100_000_000 // 8  # tc -j reports bytes per second
    asyncio.run(set_link_speed(netlab, 200))
    options = _qdisc("mgmt0", netlab.host_ns(2))["options"]
    assert isinstance(options, dict)
    assert options["rate"] == 200_000_000 // 8
    asyncio.run(set_link_speed(netlab, None))
    assert _qdisc(netlab.mgmt_root_veth(1))["kind"] != "tbf"
    assert _qdisc("mgmt0", netlab.host_ns(1))["kind"] != "tbf"


def test_create_is_idempotent_and_status_reports_the_lab(netlab: LabNetPlan) -> None:
    asyncio.run(create_lab(netlab))  # a second `lab up` repairs, never duplicates
    st = asyncio.run(status(netlab.prefix))
    root = {link.name: link for link in st.root_links}
    assert set(root) == {
        netlab.mgmt_bridge,
        netlab.inst_bridge,
        *(netlab.mgmt_root_veth(i) for i in (1, 2)),
        *(netlab.inst_root_veth(i) for i in (1, 2)),
    }
    assert root[netlab.mgmt_bridge].addresses == ["198.18.0.1/16"]
    assert root[netlab.inst_bridge].addresses == ["198.19.0.1/16"]
    assert root[netlab.mgmt_root_veth(1)].master == netlab.mgmt_bridge
    assert root[netlab.mgmt_root_veth(1)].tbf_mbit == 100
    assert root[netlab.inst_root_veth(2)].master == netlab.inst_bridge
    assert [ns.name for ns in st.namespaces] == [netlab.host_ns(1), netlab.host_ns(2)]
    inside = {link.name: link for link in st.namespaces[0].links}
    assert inside["mgmt0"].addresses == ["198.18.0.11/16"]
    assert inside["inst0"].master == "br-inst"
    assert all(link.up for link in inside.values())
    assert _ping("198.18.0.12")


def test_a_second_lab_is_refused_and_leaves_nothing(netlab: LabNetPlan) -> None:
    other = LabNetPlan(prefix=_prefix(), hosts=1)
    # No process runs in netlab's namespaces: it reads as a lab a killed run left behind.
    with pytest.raises(LabNetError, match=rf"lab '{netlab.prefix}' was left behind") as refused:
        asyncio.run(create_lab(other))
    assert f"ferry lab down --prefix {netlab.prefix}" in str(refused.value)
    assert _leftovers(other.prefix) == []
    assert _ping("198.18.0.11")
    sleeper = subprocess.Popen(_in_ns(netlab.host_ns(2), "sleep", "60"))
    try:
        with pytest.raises(LabNetError, match="another lab is running"):
            asyncio.run(create_lab(other))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert _leftovers(other.prefix) == []


# -- agent taps and the instance fabric --------------------------------------------------------

AGENT_SCRIPT = """
    import asyncio, json
    from ferry.agent.net import create_tap, delete_tap, list_taps
    async def main():
        await create_tap({name!r}, "br-inst")
        await create_tap({name!r}, "br-inst")  # idempotent
        print(json.dumps([t.__dict__ for t in await list_taps()]))
    asyncio.run(main())
"""

DELETE_SCRIPT = """
    import asyncio
    from ferry.agent.net import delete_tap, list_taps
    async def main():
        await delete_tap({name!r})
        await delete_tap({name!r})  # idempotent
        print(len(await list_taps()))
    asyncio.run(main())
"""


@pytest.mark.skipif(not Path("/dev/net/tun").exists(), reason="needs /dev/net/tun")
def test_agent_creates_taps_in_its_own_namespace(netlab: LabNetPlan) -> None:
    for i, uuid in ((1, UUID1), (2, UUID2)):
        ns, name = netlab.host_ns(i), tap_name(uuid, 0)
        taps = json.loads(_python_in_ns(ns, AGENT_SCRIPT.format(name=name)))
        assert [(t["name"], t["bridge"], t["up"]) for t in taps] == [(name, "br-inst", True)]
        link = _link(name, ns)
        assert link["master"] == "br-inst"
        assert "UP" in link["flags"]  # type: ignore[operator]
        info = link["linkinfo"]
        assert isinstance(info, dict)
        assert info["info_kind"] == "tun"
        assert info["info_data"]["type"] == "tap"
        assert info["info_data"]["user"] == "root"
        assert info["info_data"]["pi"] is False
        assert info["info_data"]["persist"] is True
        assert _run("ip", "link", "show", name, check=False).returncode != 0  # not in root ns
    assert _python_in_ns(netlab.host_ns(1), DELETE_SCRIPT.format(name=tap_name(UUID1, 0))) == "0\n"


RARP_SCRIPT = """
    import socket, struct
    mac = bytes.fromhex({mac!r}.replace(":", ""))
    # what QEMU sends after a migration (announce-self): broadcast RARP, request-reverse
    frame = b"\\xff" * 6 + mac + struct.pack("!H", 0x8035)
    frame += struct.pack("!HHBBH", 1, 0x0800, 6, 4, 3) + mac + bytes(4) + mac + bytes(4)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind(("eth0", 0))
        s.send(frame.ljust(60, b"\\0"))
"""


def _plug_fake_guest(plan: LabNetPlan, guest_ns: str, host: int) -> None:
    """Attach namespace `guest_ns` (eth0: GUEST_MAC, GUEST_IP/16) to host's br-inst."""
    host_ns = plan.host_ns(host)
    _run("ip", "-n", host_ns, "link", "add", "gport", "type", "veth", "peer", "eth0")
    _run("ip", "-n", host_ns, "link", "set", "eth0", "netns", guest_ns)
    _run("ip", "-n", host_ns, "link", "set", "gport", "master", "br-inst", "up")
    _run("ip", "-n", guest_ns, "link", "set", "eth0", "address", GUEST_MAC)
    _run("ip", "-n", guest_ns, "addr", "add", f"{GUEST_IP}/16", "dev", "eth0")
    _run("ip", "-n", guest_ns, "link", "set", "eth0", "up")


def test_instance_fabric_keeps_an_instance_ip_across_hosts(netlab: LabNetPlan) -> None:
    guest = f"{netlab.prefix}-g1"  # carries the lab prefix: teardown removes it too
    _run("ip", "netns", "add", guest)
    # no IPv6 in the guest: its DAD/MLD chatter would teach the bridges without any RARP
    _run(*_in_ns(guest, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"))
    _run(*_in_ns(guest, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"))
    _run("ip", "-n", guest, "link", "set", "lo", "up")
    _plug_fake_guest(netlab, guest, host=1)
    assert _ping(GUEST_IP)  # root ns -> <p>-inst -> <p>-i1 -> h1 br-inst -> guest
    assert _ping(netlab.inst_root_ip, ns=guest)  # and back

    # "migrate" the guest to host 2: same MAC, same IP, new port
    _run("ip", "-n", netlab.host_ns(1), "link", "del", "gport")
    _plug_fake_guest(netlab, guest, host=2)
    assert not _ping(GUEST_IP, wait=1)  # the fabric still sends the guest's frames to host 1
    _python_in_ns(guest, RARP_SCRIPT.format(mac=GUEST_MAC))
    assert _ping(GUEST_IP)  # the announcement taught the bridges the new port


# -- teardown without state --------------------------------------------------------------------


def test_teardown_from_a_fresh_process_needs_no_state() -> None:
    plan = LabNetPlan(prefix=_prefix(), hosts=2, link_mbit=100)
    decoy = f"{plan.prefix}z"  # starts with the prefix but not with `<prefix>-`: must survive
    sleeper: subprocess.Popen[bytes] | None = None
    try:
        _create_or_skip(plan)
        _run("ip", "link", "add", decoy, "type", "bridge")
        _run("ip", "netns", "add", decoy)
        sleeper = subprocess.Popen(_in_ns(plan.host_ns(1), "sleep", "600"))
        time.sleep(0.2)
        code = f"""
            import asyncio
            from ferry.lab.net import teardown
            report = asyncio.run(teardown({plan.prefix!r}))
            print(len(report.namespaces), len(report.links), len(report.killed))
        """
        result = _run(sys.executable, "-c", textwrap.dedent(code))
        assert result.stdout.split() == ["2", "6", "1"]
        assert sleeper.wait(timeout=10) is not None  # the process inside h1 was ended
        assert _leftovers(plan.prefix) == []
        assert _run("ip", "link", "show", decoy).returncode == 0
        assert decoy in _run("ip", "netns", "list").stdout
        again = asyncio.run(teardown(plan.prefix))
        assert (again.namespaces, again.links, again.killed) == ([], [], [])
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        _run("ip", "link", "del", decoy, check=False)
        _run("ip", "netns", "del", decoy, check=False)
        asyncio.run(teardown(plan.prefix))
        assert _leftovers(plan.prefix) == []


# -- measured shaping --------------------------------------------------------------------------

RECEIVER = """
    import socket, sys, time
    srv = socket.create_server((sys.argv[1], 0))
    print(srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    total, start = 0, None
    while chunk := conn.recv(1 << 20):
        start = start or time.monotonic()
        total += len(chunk)
    print(total, time.monotonic() - start, flush=True)
"""

SENDER = """
    import socket, sys
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60) as conn:
        block = bytes(1 << 20)
        for _ in range(int(sys.argv[3])):
            conn.sendall(block)
"""

MIB = 20


def _measure_mbit(plan: LabNetPlan, sender_ns: str | None, receiver: int) -> float:
    """Goodput in Mbit/s of a MIB MiB TCP transfer into host `receiver`, timed by the receiver
    from its first byte to end of stream."""
    argv = [sys.executable, "-c", textwrap.dedent(RECEIVER), plan.mgmt_ip(receiver)]
    with subprocess.Popen(
        _in_ns(plan.host_ns(receiver), *argv), stdout=subprocess.PIPE, text=True
    ) as server:
        try:
            assert server.stdout is not None
            port = server.stdout.readline().strip()
            send = [sys.executable, "-c", textwrap.dedent(SENDER), plan.mgmt_ip(receiver), port]
            send.append(str(MIB))
            _run(*(_in_ns(sender_ns, *send) if sender_ns else send), timeout=120)
            total, seconds = server.stdout.readline().split()
        finally:
            if server.poll() is None:
                server.kill()
    assert int(total) == MIB << 20
    return int(total) * 8 / float(seconds) / 1e6


def test_measured_throughput_follows_the_link_speed() -> None:
    plan = LabNetPlan(prefix=_prefix(), hosts=2, link_mbit=50)
    try:
        _create_or_skip(plan)
        host_to_host = _measure_mbit(plan, sender_ns=plan.host_ns(1), receiver=2)
        root_to_host = _measure_mbit(plan, sender_ns=None, receiver=1)  # root-side tbf only
        print(f"\nshaped 50 Mbit/s: h1->h2 {host_to_host:.1f} Mbit/s, root->h1 {root_to_host:.1f}")
        for measured in (host_to_host, root_to_host):
            assert 0.6 * 50 <= measured <= 1.2 * 50
    finally:
        asyncio.run(teardown(plan.prefix))
        assert _leftovers(plan.prefix) == []
