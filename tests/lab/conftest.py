"""Fixtures for booting Ferry's guest image under real QEMU (root only), named `image_*`.

Each test module gets its own network namespace `fti-<random>` holding a bridge with
198.18.0.1/16; each guest gets a tap on that bridge and a QEMU started inside the namespace. The
finalizers always kill the QEMU processes (by the pid from their pid files), delete the namespace
(which removes the taps and the bridge), and then check with iproute2 and by pid that nothing
is left.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ferry.lab.image import GuestImage, build_image
from ferry.lab.image_guest import kernel_args
from ferry.pki.ca import init_ca, issue, qemu_creds_dir

IMAGE_NS_PREFIX = "fti-"
IMAGE_BRIDGE = "br0"
IMAGE_BRIDGE_IP = "198.18.0.1/16"
QEMU = "qemu-system-x86_64"


def image_run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a short command, capturing its output."""
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def image_in_ns(ns: str, *argv: str) -> list[str]:
    """`argv` run inside namespace `ns`."""
    return ["ip", "netns", "exec", ns, *argv]


def _namespaces() -> list[str]:
    return [line.split()[0] for line in image_run("ip", "netns", "list").stdout.splitlines()]


def _qemu_alive(pid: int) -> bool:
    """True while `pid` is a live QEMU (a reused pid of another program does not count)."""
    try:
        return b"qemu-system" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_qemu(pid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; returns once the process is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _qemu_alive(pid):
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while _qemu_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


@dataclass
class ImageLedger:
    """Everything the module created, checked at the very end."""

    namespaces: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)


@pytest.fixture(scope="module")
def image_ledger() -> Iterator[ImageLedger]:
    """Torn down last: no namespace of ours listed, no QEMU of ours alive."""
    ledger = ImageLedger()
    yield ledger
    left_ns = [ns for ns in _namespaces() if ns in ledger.namespaces]
    left_pids = [pid for pid in ledger.pids if _qemu_alive(pid)]
    assert not left_ns and not left_pids, f"left behind: {left_ns} {left_pids}"


@pytest.fixture(scope="session")
def image_built(tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    """The guest image, built once per session."""
    return build_image(tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="module")
def image_netns(image_ledger: ImageLedger) -> Iterator[str]:
    """A namespace `fti-<random>` with lo up and bridge br0 at 198.18.0.1/16."""
    ns = f"{IMAGE_NS_PREFIX}{secrets.token_hex(3)}"
    image_run("ip", "netns", "add", ns)
    image_ledger.namespaces.append(ns)
    try:
        image_run("ip", "-n", ns, "link", "set", "lo", "up")
        image_run("ip", "-n", ns, "link", "add", IMAGE_BRIDGE, "type", "bridge")
        image_run("ip", "-n", ns, "addr", "add", IMAGE_BRIDGE_IP, "dev", IMAGE_BRIDGE)
        image_run("ip", "-n", ns, "link", "set", IMAGE_BRIDGE, "up")
        yield ns
    finally:
        image_run("ip", "netns", "del", ns, check=False)
        assert ns not in _namespaces(), f"namespace {ns} still listed"


@dataclass(frozen=True)
class BootedGuest:
    """A running guest: its QEMU pid, files, and how it was configured."""

    name: str
    ip: str
    mac: str
    pid: int
    serial_log: Path
    qmp_socket: Path
    started: float

    def serial(self) -> str:
        return self.serial_log.read_text(errors="replace")


class ImageGuests:
    """Boots guests into one namespace and remembers them for the finalizer."""

    def __init__(self, image: GuestImage, ns: str, ledger: ImageLedger) -> None:
        self.image, self.ns, self.ledger = image, ns, ledger
        self.workdir = Path(tempfile.mkdtemp(prefix="fti-"))  # short: QMP socket paths
        self.guests: list[BootedGuest] = []
        self.others: list[int] = []  # QEMUs started by `launch`

    def _argv(self, index: int, append: str, mac: str) -> list[str]:
        run = self.workdir / str(index)
        return [
            QEMU, "-machine", "pc-q35-7.2", "-accel", "tcg", "-cpu", "qemu64",
            "-m", "128", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", f"file:{run / 'serial.log'}",
            "-qmp", f"unix:{run / 'qmp.sock'},server=on,wait=off",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", append,
            "-netdev", f"tap,id=n0,ifname=tap{index},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac}",
            "-pidfile", str(run / "qemu.pid"), "-daemonize",
        ]  # fmt: skip

    async def boot(self, name: str, ip: str, dirty_mibps: int = 0) -> BootedGuest:
        """Create tap<N> on br0 and start QEMU in the namespace; returns once it daemonized."""
        index = len(self.guests)
        run = self.workdir / str(index)
        run.mkdir()
        tap = f"tap{index}"
        image_run(*image_in_ns(self.ns, "ip", "tuntap", "add", "dev", tap, "mode", "tap"))
        image_run("ip", "-n", self.ns, "link", "set", tap, "master", IMAGE_BRIDGE, "up")
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        argv = self._argv(index, kernel_args(name, ip, dirty_mibps=dirty_mibps), mac)
        started = time.monotonic()
        pid = await self._start(argv, run / "qemu.pid")
        guest = BootedGuest(
            name,
            ip.split("/", maxsplit=1)[0],
            mac,
            pid,
            run / "serial.log",
            run / "qmp.sock",
            started,
        )
        self.guests.append(guest)
        return guest

    async def launch(self, argv: list[str], pidfile: Path) -> int:
        """Start a QEMU of any command line (it must `-daemonize` with `-pidfile PIDFILE`) in the
        namespace; its pid, killed with the others."""
        pid = await self._start(argv, pidfile)
        self.others.append(pid)
        return pid

    async def _start(self, argv: list[str], pidfile: Path) -> int:
        """Run a daemonizing QEMU in the namespace; its pid, in the module's ledger."""
        proc = await asyncio.create_subprocess_exec(
            *image_in_ns(self.ns, *argv),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        assert proc.returncode == 0, f"QEMU did not start: {err.decode().strip()}"
        pid = int((await asyncio.to_thread(pidfile.read_text)).strip())
        self.ledger.pids.append(pid)
        return pid

    def stop_all(self) -> None:
        """Kill every QEMU we started, by pid; remove the work directory."""
        pids = [guest.pid for guest in self.guests] + self.others
        for pid in pids:
            stop_qemu(pid)
        shutil.rmtree(self.workdir, ignore_errors=True)
        alive = [pid for pid in pids if _qemu_alive(pid)]
        assert not alive, f"QEMU still running: {alive}"


@pytest.fixture
def image_guests(
    image_built: GuestImage, image_netns: str, image_ledger: ImageLedger
) -> Iterator[ImageGuests]:
    """Boot guests with `await image_guests.boot(name, ip)`; all are killed afterwards."""
    guests = ImageGuests(image_built, image_netns, image_ledger)
    try:
        yield guests
    finally:
        guests.stop_all()
        for index in range(len(guests.guests)):
            image_run("ip", "-n", image_netns, "link", "del", f"tap{index}", check=False)


LOOPBACK = "127.0.0.1"  # where in-namespace migrations of the image tests stream


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    """The QEMU driver's credentials layout for a host certificate naming LOOPBACK."""
    pki = tmp_path / "pki"
    init_ca(pki)
    issue(pki, "host1", ips=[LOOPBACK])
    return qemu_creds_dir(pki, "host1", tmp_path / "tls")
