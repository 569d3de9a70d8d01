"""Ferry's guest image under real QEMU (TCG): it boots, networks, serves its name, dirties memory.

Needs root (namespaces, taps) and qemu-system-x86_64; skips otherwise. Everything happens in a
namespace of its own (`fti-<random>`, 198.18.0.0/16); see conftest.py for the teardown.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from qemu.qmp import QMPClient

from ferry.lab.image_guest import serial_tail, wait_for_ready
from ferry.lab.image_sources import ImageError, find_kernel
from tests.lab.conftest import (
    IMAGE_BRIDGE,
    QEMU,
    BootedGuest,
    ImageGuests,
    image_in_ns,
    image_run,
    stop_qemu,
)


def _skip_reason() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "booting the guest image needs root (network namespaces, taps)"
    for tool in (QEMU, "ip", "ping", "busybox"):
        if shutil.which(tool) is None:
            return f"booting the guest image needs {tool}"
    try:
        find_kernel(Path("/boot"))
    except ImageError as exc:
        return str(exc)
    return None


_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

READY_TIMEOUT = 60.0


async def _ready(guest: BootedGuest) -> float:
    """Wait for READY; the seconds from starting QEMU to READY."""
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            ready = await wait_for_ready(guest.serial_log, pid=guest.pid)
    except TimeoutError:
        pytest.fail(f"no READY within {READY_TIMEOUT:.0f}s: {serial_tail(guest.serial_log)}")
    assert (ready.name, ready.ip) == (guest.name, guest.ip)
    return time.monotonic() - guest.started


def _http_get(ns: str, url: str) -> str:
    # No `wget -T`: busybox 1.35's wget segfaults with it when the connection is refused.
    return image_run(*image_in_ns(ns, "busybox", "wget", "-q", "-O", "-", url)).stdout


def _fields(body: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in body.splitlines() if "=" in line)


async def _dirty_rate_mibps(qmp_socket: Path, samples: int = 3) -> float:
    """QEMU's own measurement (page sampling over 1 s windows), median of `samples`.
    (mode=dirty-bitmap would be exact but crashes QEMU 7.2 under TCG.)"""
    client = QMPClient("image-test")
    await client.connect(str(qmp_socket))
    rates: list[float] = []
    try:
        for _ in range(samples):
            args = {"calc-time": 1, "sample-pages": 10000, "mode": "page-sampling"}
            await client.execute("calc-dirty-rate", args)
            await asyncio.sleep(1.0)
            for _ in range(50):
                await asyncio.sleep(0.2)
                info = cast(dict[str, Any], await client.execute("query-dirty-rate"))
                if info["status"] == "measured":
                    rates.append(float(info["dirty-rate"]))
                    break
    finally:
        await client.disconnect()
    assert rates, "QEMU never finished measuring the dirty rate"
    return statistics.median(rates)


async def test_guest_boots_answers_ping_and_serves_its_name(
    image_guests: ImageGuests, record_property: Callable[[str, object], None]
) -> None:
    guest = await image_guests.boot("fry-guest-a", "198.18.0.10/16")
    boot_seconds = await _ready(guest)
    record_property("boot_to_ready_seconds", round(boot_seconds, 2))
    print(f"boot to READY: {boot_seconds:.2f}s")

    ping = image_run(*image_in_ns(image_guests.ns, "ping", "-n", "-c", "3", "-W", "2", guest.ip))
    assert "3 received" in ping.stdout, ping.stdout

    first = _fields(_http_get(image_guests.ns, f"http://{guest.ip}/"))
    second = _fields(_http_get(image_guests.ns, f"http://{guest.ip}/"))
    assert first["name"] == second["name"] == "fry-guest-a"
    assert first["ip"] == "198.18.0.10/16"
    assert int(second["requests"]) == int(first["requests"]) + 1
    assert float(second["uptime"]) >= float(first["uptime"])
    assert first["boot_id"] == second["boot_id"]
    assert _fields(_http_get(image_guests.ns, f"http://{guest.ip}/dirty"))["state"] == "idle"
    assert await _dirty_rate_mibps(guest.qmp_socket) <= 3


async def test_guest_dirties_memory_at_the_requested_rate(image_guests: ImageGuests) -> None:
    guest = await image_guests.boot("fry-guest-dirty", "198.18.0.11/16", dirty_mibps=20)
    await _ready(guest)
    url = f"http://{guest.ip}/dirty"
    status: dict[str, str] = {}
    for _ in range(100):
        status = _fields(_http_get(image_guests.ns, url))
        if status.get("state") == "running" and int(status["elapsed_s"]) >= 3:
            break
        await asyncio.sleep(0.2)
    assert status.get("state") == "running", status
    assert "FERRY-GUEST-DIRTY mibps=20" in guest.serial()
    assert status["target_mibps"] == "20"
    assert int(status["actual_kibps"]) >= 0.8 * 20 * 1024, status
    measured = await _dirty_rate_mibps(guest.qmp_socket)
    print(f"dirtier: guest reports {status}, QEMU measures {measured} MiB/s")
    assert 10 <= measured <= 40, f"QEMU measured {measured} MiB/s for a target of 20"


async def test_a_guest_announces_its_address_so_a_reused_ip_answers_at_once(
    image_guests: ImageGuests,
) -> None:
    """A new guest on the IP of an earlier one (another MAC): its unsolicited ARP at boot
    updates the neighbours' caches. Without it they kept the old MAC until the entry went
    stale, and the reused IP did not answer for about 30 s (seen in the lab, where a deleted
    instance's IP goes to the next one)."""
    ip = "198.18.0.20/16"
    # The bridge as on a host, where the neighbour cache outlives a guest: another port keeps
    # its carrier up while no guest runs (a bridge that loses it flushes the cache), and it has
    # a MAC of its own (one taken from its ports changes with them, and flushes it too).
    ns = image_guests.ns
    image_run("ip", "-n", ns, "link", "set", IMAGE_BRIDGE, "address", "02:00:c6:12:00:01")
    image_run("ip", "-n", ns, "link", "add", "keep0", "type", "veth", "peer", "name", "keep1")
    image_run("ip", "-n", ns, "link", "set", "keep1", "up")
    image_run("ip", "-n", ns, "link", "set", "keep0", "master", IMAGE_BRIDGE, "up")
    earlier = await image_guests.boot("fry-earlier", ip)
    await _ready(earlier)
    ping = image_run(*image_in_ns(image_guests.ns, "ping", "-n", "-c", "1", "-W", "2", earlier.ip))
    assert "1 received" in ping.stdout, ping.stdout

    def neighbour() -> str:
        shown = image_run("ip", "-n", image_guests.ns, "neigh", "show", earlier.ip).stdout
        return shown.lower()

    assert earlier.mac in neighbour()
    stop_qemu(earlier.pid)
    later = await image_guests.boot("fry-later", ip)
    await _ready(later)
    for _ in range(50):  # no ping sent: only the guest's own announcement can change it
        if later.mac in neighbour():
            break
        await asyncio.sleep(0.1)
    assert later.mac in neighbour(), neighbour()
    ping = image_run(*image_in_ns(image_guests.ns, "ping", "-n", "-c", "1", "-W", "2", later.ip))
    assert "1 received" in ping.stdout, ping.stdout
