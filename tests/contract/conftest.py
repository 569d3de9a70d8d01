"""Two hosts of one kind for the driver contract (agent/drivers/base.py): `driver_pair` gives a
source and a destination driver, both `fake` (always; FakeDriver with FakeDiskStore, state files
in tmp_path) and `qemu` (root only; real QEMU under TCG with the lab's guest image).

QEMU hosts: one namespace each, `fct-<random>a` and `fct-<random>b`, with the instance bridge
`br-inst` and a veth between them carrying the migration stream (198.18.254.1 -> .2, one host
certificate naming both). Two namespaces because a guest's taps are named after its instance,
so a source and its target on one bridge would want the same tap. Each QemuDriver is wrapped
(`InNamespace`) so that every call runs with the test's thread in its host's namespace: taps,
netlink and QEMU processes land there. Finalizers kill every QEMU started under the test's run
directory, delete the taps, and, at the module's end, the namespaces, then check nothing is left.

Without root, QEMU or the image the qemu variant is skipped, but fails when `CI` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import pytest
from qemu.qmp import QMPClient

from ferry.agent.config import StorageSettings
from ferry.agent.drivers.base import (
    DiskCopy,
    DiskInventory,
    DiskSpec,
    Driver,
    GuestSpec,
    GuestStatus,
    HostFacts,
    ImageSpec,
    MigrationChannel,
    MigrationParams,
    MigrationProgress,
    PortSpec,
)
from ferry.agent.drivers.fake import FakeDriver
from ferry.agent.drivers.fake_disks import FakeDiskStore
from ferry.agent.drivers.qemu import QemuDriver
from ferry.agent.drivers.qemu_argv import QemuConfig, TlsFiles
from ferry.agent.storage import DiskStore
from ferry.lab.image import GuestImage, ImageError, build_image
from ferry.lab.image_disk import DiskImage, build_disk_image
from ferry.orchestrator.migration.ports import disk_port
from ferry.pki.ca import init_ca, issue

MIB = 2**20
FAST = MigrationParams(max_bandwidth_bytes=1024 * MIB, downtime_limit_ms=300)
SLOW = MigrationParams(max_bandwidth_bytes=1 * MIB, downtime_limit_ms=300)  # 128 s for 128 MiB
WAIT = 60.0  # the bound of every wait for a migration (TCG on a shared 2-core machine)
NS_PREFIX = "fct-"
BRIDGE = "br-inst"
SOURCE_IP, DEST_IP = "198.18.254.1", "198.18.254.2"
QEMU = "qemu-system-x86_64"
ARRIVED = "migration target (running)"  # a target whose stream completed (both drivers)
FACTS = HostFacts(2, 4096, 20, "qemu64", "7.2", "pc-q35-7.2")
CLONE_NEWNET = 0x40000000
_ports = itertools.count(49400)
T = TypeVar("T")


def need(ok: bool, why: str) -> None:
    """Skip the qemu variant when it cannot run here; in CI, fail instead."""
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"the qemu contract variant cannot run: {why}")
        pytest.skip(why)


# -- namespaces ----------------------------------------------------------------------------------


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30).stdout


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


class Netns:
    """A named namespace the calling thread can step into and back out of."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        _setns(self.fd)
        try:
            yield
        finally:
            _setns(self.home)

    def taps(self) -> list[str]:
        out = sh("ip", "-n", self.name, "-o", "link", "show", "type", "tun")
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.home)


class InNamespace(Driver):
    """A driver whose every call runs in its host's namespace (see the module's docstring)."""

    def __init__(self, inner: Driver, ns: Netns) -> None:
        self.inner, self.ns, self.name = inner, ns, inner.name

    async def _in(self, call: Awaitable[T]) -> T:
        with self.ns.inside():
            return await call

    async def facts(self) -> HostFacts:
        return await self._in(self.inner.facts())

    async def disks(self) -> DiskInventory | None:
        return await self._in(self.inner.disks())

    async def spawn(self, spec: GuestSpec) -> GuestStatus:
        return await self._in(self.inner.spawn(spec))

    async def destroy(self, instance_id: str) -> None:
        await self._in(self.inner.destroy(instance_id))

    async def list(self) -> list[GuestStatus]:
        return await self._in(self.inner.list())

    async def prepare_incoming(
        self,
        spec: GuestSpec,
        port: int,
        params: MigrationParams,
        disk: DiskCopy | None = None,
    ) -> GuestStatus:
        return await self._in(self.inner.prepare_incoming(spec, port, params, disk))

    async def migrate(
        self, instance_id: str, channel: MigrationChannel, params: MigrationParams
    ) -> None:
        await self._in(self.inner.migrate(instance_id, channel, params))

    async def migration_status(self, instance_id: str) -> MigrationProgress:
        return await self._in(self.inner.migration_status(instance_id))

    async def tune_migration(
        self,
        instance_id: str,
        *,
        downtime_limit_ms: int | None = None,
        max_bandwidth_bytes: int | None = None,
        start_postcopy: bool = False,
    ) -> None:
        await self._in(
            self.inner.tune_migration(
                instance_id,
                downtime_limit_ms=downtime_limit_ms,
                max_bandwidth_bytes=max_bandwidth_bytes,
                start_postcopy=start_postcopy,
            )
        )

    async def finish_destination(self, instance_id: str) -> GuestStatus:
        return await self._in(self.inner.finish_destination(instance_id))

    async def finish_source(self, instance_id: str) -> None:
        await self._in(self.inner.finish_source(instance_id))

    async def abort_migration(self, instance_id: str, *, source: bool) -> None:
        await self._in(self.inner.abort_migration(instance_id, source=source))

    async def close(self) -> None:
        await self._in(self.inner.close())


# -- QEMU processes ------------------------------------------------------------------------------


def pids_of(program: bytes, marker: str) -> list[int]:
    """Live processes of `program` whose command line contains `marker` (zombies are not)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if program in cmdline and marker.encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def qemu_pids(marker: str) -> list[int]:
    """Live QEMU processes whose command line contains `marker`."""
    return pids_of(b"qemu-system", marker)


def tunnel_pids(marker: str) -> list[int]:
    """Live disk-copy tunnels (socat) whose command line contains `marker`."""
    return pids_of(b"socat", marker)


def kill_qemus(marker: str) -> list[int]:
    """SIGKILL every QEMU and disk tunnel of `marker`, wait (bounded) for them to go; those
    still alive."""
    for pid in qemu_pids(marker) + tunnel_pids(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (qemu_pids(marker) or tunnel_pids(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return qemu_pids(marker) + tunnel_pids(marker)


# -- the image and the lab (module-wide, qemu only) ---------------------------------------------


@pytest.fixture(scope="session")
def contract_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[GuestImage, DiskImage]:
    """The lab's kernel+initramfs image and its bootable qcow2, built once per session."""
    need(os.geteuid() == 0, "needs root (network namespaces, taps)")
    need(shutil.which(QEMU) is not None, f"no {QEMU}")
    need(shutil.which("ip") is not None, "no iproute2")
    out = tmp_path_factory.mktemp("contract-image")
    try:
        return build_image(out / "initramfs"), build_disk_image(out / "disk")
    except (ImageError, OSError) as exc:
        need(False, f"cannot build the guest image: {exc}")
        raise


@dataclass
class QemuLab:
    source: Netns
    dest: Netns
    tls: TlsFiles
    image: GuestImage
    disk: DiskImage


@pytest.fixture(scope="module")
def qemu_lab(
    contract_images: tuple[GuestImage, DiskImage], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[QemuLab]:
    base = f"{NS_PREFIX}{secrets.token_hex(3)}"
    names = [f"{base}a", f"{base}b"]
    spaces: list[Netns] = []
    try:
        for name in names:
            sh("ip", "netns", "add", name)
            spaces.append(Netns(name))
            sh("ip", "-n", name, "link", "set", "lo", "up")
            sh("ip", "-n", name, "link", "add", BRIDGE, "type", "bridge")
            sh("ip", "-n", name, "link", "set", BRIDGE, "up")
        sh("ip", "-n", names[0], "link", "add", "fctva", "type", "veth", "peer", "name", "fctvb",
           "netns", names[1])  # fmt: skip
        for name, veth, ip in zip(names, ["fctva", "fctvb"], [SOURCE_IP, DEST_IP], strict=True):
            sh("ip", "-n", name, "addr", "add", f"{ip}/30", "dev", veth)
            sh("ip", "-n", name, "link", "set", veth, "up")
        pki = tmp_path_factory.mktemp("contract-pki")
        init_ca(pki)
        host = issue(pki, "host1", ips=[SOURCE_IP, DEST_IP])
        image, disk = contract_images
        yield QemuLab(spaces[0], spaces[1], TlsFiles(host.ca, host.cert, host.key), image, disk)
    finally:
        for space in spaces:
            space.close()
        for name in names:
            sh("ip", "netns", "del", name, check=False)
        listed = sh("ip", "netns", "list")
        assert not any(name in listed for name in names), f"namespaces left: {listed}"


# -- the pair ------------------------------------------------------------------------------------


class StubImages:
    """An ImageFetcher that has the image already (the cache's download is tested elsewhere)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def ensure(self, image: ImageSpec) -> Path:
        return self.path


@dataclass
class Host:
    driver: Driver
    store: DiskStore
    restart_with: Callable[[], Driver]  # a new driver over the same run dir / state file

    async def restart(self) -> Driver:
        """The agent restarts: a new driver instance over the same state."""
        await self.driver.close()
        self.driver = self.restart_with()
        return self.driver


@dataclass
class DriverPair:
    kind: str
    source_host: Host
    dest_host: Host
    channel: MigrationChannel
    image: ImageSpec
    marker: str  # in the command line of every QEMU of this pair (its run directory)
    source_name: str  # the source host's certificate name (the disk export admits it alone)
    dest_ns: str = ""  # the destination's network namespace (the qemu kind)
    names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def source(self) -> Driver:
        return self.source_host.driver

    @property
    def dest(self) -> Driver:
        return self.dest_host.driver

    @property
    def port(self) -> int:
        return self.channel.port

    @property
    def disk_copy(self) -> DiskCopy:
        """What a destination exports a local disk's copy with."""
        return DiskCopy(disk_port(self.port), self.source_name)

    @property
    def disk_channel(self) -> MigrationChannel:
        """The channel of a migration that copies a local disk."""
        return replace(self.channel, disk_port=disk_port(self.port))

    def spec(self, *, disk: bool = False) -> GuestSpec:
        """A new guest: 1 vCPU, 128 MiB, one port on the lab network; a root disk if asked."""
        number = next(self.names)
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        port = PortSpec("lab", mac, f"198.18.0.{10 + number}/16", "198.18.0.1")
        root = DiskSpec(self.image, self.image.virtual_size_bytes) if disk else None
        return GuestSpec(str(uuid.uuid4()), f"ct{number}", 1, 128, (port,), disk=root)

    async def write_disk(self, host: Host, instance_id: str, command: str) -> None:
        """qemu-io `command` on the guest's disk through its running QEMU (HMP `qemu-io` on its
        disk device, as the guest would write; QEMU prints the outcome to its own stdout): the
        qemu kind only, the fake has no data."""
        if self.kind == "fake":
            return
        inner = host.driver.inner if isinstance(host.driver, InNamespace) else host.driver
        assert isinstance(inner, QemuDriver)
        client = QMPClient(f"disk-io-{instance_id[:8]}")
        await client.connect(str(inner.config.run_dir / instance_id / "qmp.sock"))
        try:
            line = f'qemu-io -d /machine/peripheral/disk0/virtio-backend "{command}"'
            await client.execute("human-monitor-command", {"command-line": line})
        finally:
            await client.disconnect()

    def set_link(self, *, up: bool) -> None:
        """The destination's link goes down (no RST, no FIN: packets are lost), or up again."""
        if self.kind == "fake":
            source = self.source
            assert isinstance(source, FakeDriver)
            source.set_link(up=up)
            return
        sh("ip", "-n", self.dest_ns, "link", "set", "fctvb", "up" if up else "down")

    def read_disk(self, host: Host, instance_id: str, command: str) -> str:
        """qemu-io `command` on the guest's disk file, read-only beside its QEMU: its output."""
        if self.kind == "fake":
            return ""
        path = str(host.store.path(instance_id))
        return sh("qemu-io", "-r", "-U", "-f", "qcow2", "-c", command, path)

    def tunnels(self) -> list[int]:
        """The disk-copy tunnels of this pair still running (the fake has none)."""
        return [] if self.kind == "fake" else tunnel_pids(self.marker)

    def processes(self, instance_id: str) -> int:
        """How many hypervisor processes run the guest on either host (the fake: none)."""
        if self.kind == "fake":
            return 0
        return len([p for p in qemu_pids(f"qemu-{instance_id}") if p in qemu_pids(self.marker)])

    async def until(self, what: str, probe: Callable[[], Awaitable[bool]]) -> None:
        deadline = time.monotonic() + WAIT
        while not await probe():
            assert time.monotonic() < deadline, f"still not {what} after {WAIT:g} s"
            await asyncio.sleep(0.05)

    async def complete(self, instance_id: str) -> MigrationProgress:
        """Wait (bounded) until the source's stream completed and the target has the guest
        (the fake is told, as fake_faults' `arrive` does; QEMU gets there by itself)."""
        reading = await self.source.migration_status(instance_id)
        deadline = time.monotonic() + WAIT
        while not reading.finished:
            assert time.monotonic() < deadline, f"migration still {reading}"
            await asyncio.sleep(0.05)
            reading = await self.source.migration_status(instance_id)
        assert reading.status == "completed", reading
        if isinstance(self.dest, FakeDriver):
            self.dest.arrive(instance_id)

        async def arrived() -> bool:
            guest = await self.dest.get(instance_id)
            return guest is not None and guest.detail == ARRIVED

        await self.until("arrived", arrived)
        return reading


PairFactory = Callable[[str], Awaitable[DriverPair]]


def _storage(root: Path, kind: str, host: str) -> StorageSettings:
    if kind == "shared":
        return StorageSettings(
            kind="shared", path=root / "pool", pool="p1", image_cache=root / host
        )
    return StorageSettings(path=root / host / "disks", image_cache=root / host / "images")


def _fake_host(root: Path, storage: str, name: str) -> Host:
    root.mkdir(parents=True, exist_ok=True)
    (root / "image.qcow2").write_text("base")
    store = FakeDiskStore(_storage(root, storage, name))
    images = StubImages(root / "image.qcow2")

    def driver() -> Driver:
        return FakeDriver(FACTS, root / f"{name}.json", disks=store, images=images)

    return Host(driver(), store, driver)


def _qemu_host(lab: QemuLab, root: Path, storage: str, name: str) -> Host:
    config = QemuConfig(
        run_dir=root / name / "run",
        kernel=lab.image.kernel,
        initrd=lab.image.initrd,
        bridge=BRIDGE,
        tls=lab.tls,
    )
    store = DiskStore(_storage(root, storage, name))
    images = StubImages(lab.disk.path)
    ns = lab.source if name == "a" else lab.dest

    def driver() -> Driver:
        return InNamespace(QemuDriver(config, store, images), ns)

    return Host(driver(), store, driver)


@pytest.fixture(params=["fake", "qemu"])
async def make_pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[PairFactory]:
    """`await make_pair("shared" | "local")`: a source and a destination of this kind, their
    instance storage shared (one pool) or each host's own."""
    kind: str = request.param
    pairs: list[DriverPair] = []
    lab: QemuLab | None = None
    workdir: Path | None = None
    if kind == "qemu":
        lab = request.getfixturevalue("qemu_lab")
        workdir = Path(tempfile.mkdtemp(prefix=NS_PREFIX))  # short: QMP socket paths

    async def factory(storage: str = "shared") -> DriverPair:
        root = (workdir or tmp_path) / f"p{len(pairs)}"
        port = next(_ports)
        hosts = [
            _fake_host(root, storage, name) if lab is None else _qemu_host(lab, root, storage, name)
            for name in ("a", "b")
        ]
        if lab is None:
            channel = MigrationChannel("host-b", port, "host-b")
            image = ImageSpec("img-1", "contract", "qcow2", 4, 64 * MIB, "0" * 64)
        else:
            channel = MigrationChannel(DEST_IP, port, DEST_IP)
            size = lab.disk.path.stat().st_size
            image = ImageSpec("img-1", "contract", "qcow2", size, lab.disk.virtual_size,
                              lab.disk.sha256)  # fmt: skip
        source_name = "host-a" if lab is None else "host1"
        pair = DriverPair(
            kind, hosts[0], hosts[1], channel, image, str(root), source_name,
            dest_ns=lab.dest.name if lab else "",
        )  # fmt: skip
        pairs.append(pair)
        return pair

    try:
        yield factory
    finally:
        for pair in pairs:
            for host in (pair.source_host, pair.dest_host):
                with contextlib.suppress(Exception):
                    await host.driver.close()
        if lab is not None and workdir is not None:
            left = kill_qemus(str(workdir))
            for space in (lab.source, lab.dest):
                for tap in space.taps():
                    sh("ip", "-n", space.name, "link", "del", tap, check=False)
            shutil.rmtree(workdir, ignore_errors=True)
            assert not left, f"QEMU processes left: {left}"
            assert not lab.source.taps() and not lab.dest.taps(), "taps left"


@pytest.fixture
async def driver_pair(make_pair: PairFactory) -> DriverPair:
    """A source and a destination of one kind, on shared storage."""
    return await make_pair("shared")
