"""The QEMU driver: one QEMU process per instance, managed over its QMP socket.

Each instance has a run directory `<run_dir>/<id>/` with its spec, pid file, QMP socket and
serial log. QEMU daemonizes, so instances outlive the agent; a restarted agent finds them by
their run directories and live pids (re-attach), never by restarting them. Machine type and CPU
model are pinned so that any two hosts of a cluster can exchange guests; live migration (over
QEMU's native TLS) is in qemu_migration.py.

QMP: a socket serves one client at a time, so every exchange is a short session (connect,
commands, disconnect) and the sessions of one instance take turns under a lock of their own
(operations such as spawn hold the instance lock and open sessions inside it). QEMU's events come
on a second monitor of the guest, held open by an EventWatch (qemu_events.py) once a migration
involves the guest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from pathlib import Path

from qemu.qmp import QMPClient

from ferry.agent import net
from ferry.agent.drivers import nbd_tunnel as tunnel
from ferry.agent.drivers.base import (
    DiskInventory,
    DriverError,
    GuestPower,
    GuestSpec,
    GuestStatus,
    HostFacts,
)
from ferry.agent.drivers.qemu_argv import DiskFiles, QemuConfig, guest_argv
from ferry.agent.drivers.qemu_events import EventWatch, connect
from ferry.agent.drivers.qemu_migration import QemuMigration
from ferry.agent.drivers.qemu_stream import INCOMING_FILE
from ferry.agent.images import ImageFetcher
from ferry.agent.storage import DiskStore, attach

_POWER = {
    "running": GuestPower.RUNNING,
    "paused": GuestPower.PAUSED,
    "inmigrate": GuestPower.INCOMING,
    "postmigrate": GuestPower.PAUSED,
    "finish-migrate": GuestPower.PAUSED,
    "prelaunch": GuestPower.PAUSED,
    "shutdown": GuestPower.STOPPED,
    "guest-panicked": GuestPower.CRASHED,
    "internal-error": GuestPower.CRASHED,
}


def _pid_alive(pid: int, instance_id: str) -> bool:
    """True when `pid` is a live QEMU of this instance (pids are reused after exit)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"qemu-system" in cmdline and instance_id.encode() in cmdline


class QemuDriver(QemuMigration):
    name = "qemu"

    def __init__(
        self,
        config: QemuConfig,
        disks: DiskStore | None = None,
        images: ImageFetcher | None = None,
    ) -> None:
        self.config = config
        self.disks_store = disks
        self.images = images
        config.run_dir.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}
        self._qmp_locks: dict[str, asyncio.Lock] = {}
        self._watches: dict[str, EventWatch] = {}
        self._unwatched: dict[str, float] = {}
        self._watch_locks: dict[str, asyncio.Lock] = {}
        self._switching: dict[str, asyncio.Task[None]] = {}
        self._disk_reads: dict[str, tuple[int, float]] = {}

    def _dir(self, instance_id: str) -> Path:
        if not re.fullmatch(r"[0-9a-f-]{8,36}", instance_id):
            raise DriverError(f"invalid instance id {instance_id!r}")
        return self.config.run_dir / instance_id

    def _lock(self, instance_id: str) -> asyncio.Lock:
        return self._locks.setdefault(instance_id, asyncio.Lock())

    async def disks(self) -> DiskInventory | None:
        return await asyncio.to_thread(self.disks_store.inventory) if self.disks_store else None

    async def facts(self) -> HostFacts:
        proc = await asyncio.create_subprocess_exec(
            self.config.binary, "--version", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        match = re.search(rb"version (\d+\.\d+(\.\d+)?)", out)
        meminfo = await asyncio.to_thread(Path("/proc/meminfo").read_text)
        total = re.search(r"MemTotal:\s+(\d+)", meminfo)
        total_kb = int(total.group(1)) if total else 0
        disk = shutil.disk_usage(self.config.run_dir)
        return HostFacts(
            vcpus=os.cpu_count() or 1,
            ram_mb=total_kb // 1024,
            disk_gb=disk.total // 2**30,
            cpu_model=self.config.cpu_model,
            qemu_version=match.group(1).decode() if match else "unknown",
            machine_type=self.config.machine_type,
            accelerator=self.config.accel,
        )

    async def spawn(self, spec: GuestSpec) -> GuestStatus:
        async with self._lock(spec.id):
            current = await self._status(spec.id)
            if current is not None and current.power is not GuestPower.STOPPED:
                return current
            return await self._start_guest(spec)

    async def _start_guest(
        self, spec: GuestSpec, extra: Sequence[str] = (), marker: str | None = None
    ) -> GuestStatus:
        """A fresh run dir, taps on the bridge, then QEMU (with `extra` arguments). `marker`
        (incoming.json) is written before the spec, so no reader sees an unmarked target."""
        rundir = self._dir(spec.id)
        shutil.rmtree(rundir, ignore_errors=True)
        rundir.mkdir(parents=True)
        if marker is not None:
            (rundir / INCOMING_FILE).write_text(marker)
        (rundir / "spec.json").write_text(json.dumps(asdict(spec)))
        taps = [net.tap_name(spec.id, i) for i in range(len(spec.ports))]
        try:
            disk = await self._disk(spec, incoming=marker is not None)
            for tap in taps:
                await net.create_tap(tap, self.config.bridge)
            await self._launch(spec, rundir, taps, extra, disk)
        except (DriverError, net.TapError) as exc:
            await self._cleanup(spec.id, taps)
            raise DriverError(str(exc)) from exc
        status = await self._status(spec.id)
        if status is None:
            raise DriverError(f"QEMU for {spec.name} exited right after starting")
        return status

    async def _disk(self, spec: GuestSpec, *, incoming: bool) -> DiskFiles | None:
        """The guest's root disk: its image fetched into the cache, and its overlay (made by the
        first start; a migration target opens the overlay the source uses, on shared storage
        the same file, or on local storage makes the empty copy its source mirrors into)."""
        if spec.disk is None:
            return None
        if self.images is None:
            raise DriverError(f"{spec.name} has a disk but this host has no image cache")
        files = await attach(self.disks_store, self.images, spec, incoming=incoming)
        assert files is not None
        return DiskFiles(files[0], files[1], spec.disk.image.format)

    async def _launch(
        self,
        spec: GuestSpec,
        rundir: Path,
        taps: list[str],
        extra: Sequence[str] = (),
        disk: DiskFiles | None = None,
    ) -> None:
        argv = [*guest_argv(self.config, spec, rundir, taps, disk), *extra]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _out, err = await proc.communicate()  # -daemonize: returns once the guest is set up
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            why = lines[-1] if lines else f"exit code {proc.returncode}"
            raise DriverError(f"QEMU for {spec.name} failed to start: {why}")

    async def destroy(self, instance_id: str) -> None:
        """Stop the guest and remove all it has here, its disk too: the instance is deleted."""
        async with self._lock(instance_id):
            await self._remove(instance_id)
            if self.disks_store is not None:
                self.disks_store.remove(instance_id)

    async def _remove(self, instance_id: str) -> None:
        """Stop the process, delete the taps and the run dir (the caller holds the lock)."""
        rundir = self._dir(instance_id)
        spec = self._spec(instance_id)
        taps = [net.tap_name(instance_id, i) for i in range(len(spec.ports))] if spec else []
        pid = self._pid(instance_id)
        await self._unwatch(instance_id)
        if pid is not None:
            await self._stop_process(instance_id, pid)
        await self._cleanup(instance_id, taps)
        await tunnel.stop_all(rundir)  # a disk copy's TLS tunnel lives in the run dir
        shutil.rmtree(rundir, ignore_errors=True)

    async def _stop_process(self, instance_id: str, pid: int) -> None:
        with contextlib.suppress(Exception):  # QEMU may drop the connection as it quits
            await self._qmp(instance_id, "quit")
        for _ in range(50):
            if not _pid_alive(pid, instance_id):
                return
            await asyncio.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            if not _pid_alive(pid, instance_id):
                return
            await asyncio.sleep(0.1)
        raise DriverError(f"QEMU process {pid} of {instance_id} does not exit")

    async def _cleanup(self, instance_id: str, taps: list[str]) -> None:
        for tap in taps:
            await net.delete_tap(tap)

    async def close(self) -> None:
        """Stop listening to events; the guests run on (a new agent watches them again, and
        completes a switchover cut short here)."""
        await self._close_switchovers()
        for instance_id in list(self._watches):
            await self._unwatch(instance_id)

    async def list(self) -> list[GuestStatus]:
        guests = []
        for spec_file in sorted(self.config.run_dir.glob("*/spec.json")):
            status = await self._status(spec_file.parent.name)
            if status is not None:
                guests.append(status)
        return guests

    def _spec(self, instance_id: str) -> GuestSpec | None:
        try:
            raw = json.loads((self._dir(instance_id) / "spec.json").read_text())
        except (OSError, ValueError):
            return None
        return GuestSpec.from_dict(raw)

    def _pid(self, instance_id: str) -> int | None:
        try:
            pid = int((self._dir(instance_id) / "qemu.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid, instance_id) else None

    async def _status(self, instance_id: str) -> GuestStatus | None:
        spec = self._spec(instance_id)
        if spec is None:
            return None
        taps = [net.tap_name(instance_id, i) for i in range(len(spec.ports))]
        pid = self._pid(instance_id)
        incoming = self._incoming(instance_id)
        if pid is None:
            why = "the incoming QEMU exited" if incoming else "no QEMU process"
            return GuestStatus(spec.id, spec.name, GuestPower.STOPPED, None, taps, why)
        try:
            state = await self._qmp(instance_id, "query-status")
            power = _POWER.get(str(state.get("status")), GuestPower.PAUSED)
            detail = str(state.get("status"))
        except Exception as exc:  # a busy or wedged QMP socket must not hide the guest
            power, detail = GuestPower.RUNNING, f"QMP not answering: {exc}"
        if incoming:  # a migration target until finish_destination, whatever QEMU does
            power, detail = GuestPower.INCOMING, f"migration target ({detail})"
        return GuestStatus(spec.id, spec.name, power, pid, taps, detail)

    @contextlib.asynccontextmanager
    async def _session(self, instance_id: str) -> AsyncIterator[QMPClient]:
        """One QMP connection for a few commands; sessions of an instance take turns."""
        sock = str(self._dir(instance_id) / "qmp.sock")
        async with self._qmp_locks.setdefault(instance_id, asyncio.Lock()):
            client = await connect(instance_id, sock)
            try:
                yield client
            finally:
                with contextlib.suppress(Exception):
                    await client.disconnect()
