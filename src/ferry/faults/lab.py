"""Fault runs on real hosts: the lab (network namespaces, one agent each, QEMU guests under
mutual TLS) behind the same `Cluster` and `Injector` protocols as the fake cluster, so the
runner, the phase watch and the invariants are the ones fake runs use. Root only.

- a cluster is `ferry lab up` into one lab directory (reused run after run, so the guest image
  is built once) and `ferry lab down` after the run, which removes every namespace, link, tap
  and process the lab made; the run's directory gets a copy of the logs first; the instances
  boot from disks of the lab image (`lifecycle.LAB_IMAGE`) on the storage the scenario names:
  the lab's shared storage, or each host's own (`lab up --storage local`: every move copies
  the disk, NBD over TLS, before the RAM);
- the controller and the agents are SIGKILLed by PID and started again with the same command
  line, state and certificates;
- a guest's death is SIGKILL of its QEMU (its PID file in the agent's run directory): the other
  end learns of it as it would in life, through the migration stream;
- a link cut is the drained host's management link (which carries its migration streams and its
  heartbeats) set down in the root namespace, and up again after the outage;
- probes: each running instance answers ping on its IP from the root namespace, no host holds
  a QEMU process or a tap of an instance its agent does not list, and each instance's disk on
  its host passes `qemu-img check` (faults/disks.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from ferry.agent.net import TAP_PREFIX, tap_name
from ferry.agent.storage import DISK_FILE
from ferry.faults.cluster import Cluster, ClusterError, all_hosts_up
from ferry.faults.collect import Probes
from ferry.faults.disks import qemu_img_reading
from ferry.faults.inject import (
    IN_PROGRESS,
    FaultMissed,
    Injected,
    ProcessInjector,
    Target,
    target_host,
)
from ferry.faults.invariants import DiskReading, GuestCopy, InstanceRecord
from ferry.faults.runner import Backend
from ferry.faults.scenarios import FaultKind, Phase, Scenario
from ferry.lab import lifecycle
from ferry.lab.cluster import HostRecord, LabRecord
from ferry.lab.disk_fill import fill, qmp_socket
from ferry.lab.lifecycle import ControllerApi, LabError, LabOptions
from ferry.lab.net_plan import LabNetPlan
from ferry.pki.tls import ssl_context_client

LAB_PREFIX = "flf"
LINK_MBIT = 1000
BANDWIDTH_MIB = 8  # idle 128 MiB guests send ~30 MiB: a few seconds of stream to hit
# A booted guest's overlay holds a few MiB (most of it written after the mirror is in sync): at
# the mirror phase each disk first gets this much data to copy, seconds of the mirror at the
# runs' bandwidth, so that the phase lasts long enough to be hit.
MIRROR_FILL_MIB = 48
MAX_INSTANCES = 2  # per drained host: guests under TCG share the machine's cores
SAFE_ETA_S = 1.0  # a destination killed this long before its stream ends cannot have the guest
PING_WITHIN_S = 60.0  # a guest moved cold boots again before it answers
LAB_SETTLE_S = 240.0  # slower than fake hosts: TCG guests, streams of real bytes
LOGS = ("controller.log", "hosts")
# The lab's shared storage directory (lab/cluster.py `storage_lines`), which `lab down` keeps:
# a run starts and ends without it, so no disk of an earlier run's instances is taken for one
# of this run's leaks.
SHARED_DISKS = "shared-disks"


def adapt(scenario: Scenario) -> Scenario:
    """What real guests on two cores afford: one drained host with at most two guests, streams
    slow enough that a phase lasts long enough to be hit. At the prepare phase one stream fewer
    than guests, so that a destination waits prepared while the other streams (with as many
    streams as guests each is prepared and started in one pass, and its prepared moment is
    seen only by chance)."""
    instances = min(scenario.instances, MAX_INSTANCES)
    streams = scenario.max_outbound
    if scenario.phase is Phase.PREPARE:
        streams = min(streams, instances - 1)
    return dataclasses.replace(
        scenario, drains=1, instances=instances, max_outbound=streams, bandwidth_mib=BANDWIDTH_MIB
    )


async def prime(cluster: Cluster, scenario: Scenario) -> None:
    """At the mirror phase, data on each drained guest's local disk (past the image's
    partitions, where the guest never looks) for the mirror to copy."""
    if scenario.phase is not Phase.MIRROR:
        return
    lab = _lab(cluster)
    for inst in await lab.call("GET", "/v1/instances"):
        if inst["host"] in lab.names[: scenario.drains]:
            await fill(qmp_socket(lab.lab_dir, inst["host"], inst["id"]), MIRROR_FILL_MIB)


class LabCluster:
    """A lab of `hosts` real hosts in `lab_dir` keeping instance disks on `storage` (shared or
    local); `logs` (the run's directory) gets its logs."""

    heartbeat_s: float

    def __init__(
        self,
        lab_dir: Path,
        logs: Path,
        hosts: int,
        prefix: str = LAB_PREFIX,
        storage: str = "shared",
    ) -> None:
        self.lab_dir = lab_dir.resolve()
        self.logs = logs
        self.prefix = prefix
        self.storage = storage
        self.names = [f"host{i}" for i in range(1, hosts + 1)]
        self.heartbeat_s = float(lifecycle.heartbeat_interval(hosts))
        self.agent_urls: dict[str, str] = {}
        self.record: LabRecord | None = None
        self.image: str | None = None
        self._api: ControllerApi | None = None
        self._agent_http: httpx.AsyncClient | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if await asyncio.to_thread(LabRecord.load, self.lab_dir) is not None:
            await lifecycle.down(self.lab_dir, self.prefix, _quiet)  # a run interrupted earlier
        await asyncio.to_thread(shutil.rmtree, self.lab_dir / SHARED_DISKS, True)
        options = LabOptions(
            self.lab_dir, len(self.names), 0, LINK_MBIT, "qemu", self.prefix, self.storage
        )
        try:
            self.record = await lifecycle.up(options, _quiet)
        except LabError as exc:
            raise ClusterError(f"the lab did not come up: {exc}") from exc
        self.agent_urls = {h.name: f"https://{h.mgmt_ip}:{h.agent_port}" for h in self.record.hosts}
        # `lab up` registers its disk image: the runs' instances boot from disks of it on the
        # lab's storage, as the lab's own instances do
        images = {i["name"] for i in await self.call("GET", "/v1/images")}
        self.image = lifecycle.LAB_IMAGE if lifecycle.LAB_IMAGE in images else None

    async def stop(self) -> None:
        await asyncio.to_thread(self._keep_logs)
        for client in (self._api.http if self._api else None, self._agent_http):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._api = self._agent_http = None
        await lifecycle.down(self.lab_dir, self.prefix, _quiet)
        await asyncio.to_thread(shutil.rmtree, self.lab_dir / SHARED_DISKS, True)

    def _keep_logs(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for name in LOGS:
            source = self.lab_dir / name
            if source.is_file():
                shutil.copy2(source, self.logs / name)
            elif source.is_dir():
                secrets = shutil.ignore_patterns("*.sock", "*.pem", "*.token")
                shutil.copytree(source, self.logs / name, dirs_exist_ok=True, ignore=secrets)

    # -- what the runner reads ----------------------------------------------------------------

    @property
    def database(self) -> Path | None:
        return self.lab_dir / "state" / "ferry.db"

    def controller_tls(self) -> ssl.SSLContext:
        issued = self.lab_dir / "pki" / "issued" / "controller"
        return ssl_context_client(
            cert=issued / "cert.pem", key=issued / "key.pem", ca=issued / "ca.pem"
        )

    @property
    def agent_http(self) -> httpx.AsyncClient:
        if self._agent_http is None:
            self._agent_http = httpx.AsyncClient(verify=self.controller_tls(), timeout=30)
        return self._agent_http

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._api is None:
            self._api = ControllerApi(self._record)
        try:
            return await self._api.call(method, path, **kwargs)
        except LabError as exc:
            raise ClusterError(str(exc)) from exc

    async def hosts_up(self) -> bool:
        return await all_hosts_up(self)

    @property
    def _record(self) -> LabRecord:
        if self.record is None:
            raise ClusterError("the lab is not up")
        return self.record

    # -- crashes and restarts -----------------------------------------------------------------

    async def kill_controller(self) -> None:
        await _sigkill(self._record.controller_pid)

    async def start_controller(self) -> None:
        await lifecycle.start_controller(self._record)
        api = ControllerApi(self._record)
        try:
            await lifecycle.wait_for(api.healthy, "the controller", 60)
        finally:
            await api.http.aclose()

    @contextlib.asynccontextmanager
    async def controller_held(self) -> AsyncIterator[None]:
        yield  # a real fault's effects on both ends come from the fault itself

    async def kill_agent(self, name: str) -> None:
        await _sigkill(self._host(name).pid)

    async def start_agent(self, name: str) -> None:
        await lifecycle.start_agent(self._record, self._host(name))

    def _host(self, name: str) -> HostRecord:
        for host in self._record.hosts:
            if host.name == name:
                return host
        raise ClusterError(f"no host {name} in the lab")

    # -- real things on the hosts -------------------------------------------------------------

    def run_dir(self, host: str) -> Path:
        return self.lab_dir / "hosts" / host / "run"

    def disk_path(self, host: str, instance_id: str) -> Path:
        """Where `host` keeps the instance's disk (lab/cluster.py `storage_lines`)."""
        if self.storage == "shared":
            return self.lab_dir / SHARED_DISKS / instance_id / DISK_FILE
        return self.lab_dir / "hosts" / host / "disks" / instance_id / DISK_FILE

    def qemu_pid(self, host: str, instance_id: str) -> int | None:
        """The live QEMU of the instance on `host`, from its PID file, if any."""
        try:
            pid = int((self.run_dir(host) / instance_id / "qemu.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if instance_id in _cmdline(pid) and "qemu-system" in _cmdline(pid) else None

    def qemu_processes(self, host: str) -> dict[int, str]:
        """PID -> instance id of every QEMU process running out of `host`'s run directory."""
        marker = f"{self.run_dir(host)}/"
        found = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                args = _cmdline(int(entry.name))
                if "qemu-system" in args and marker in args:
                    found[int(entry.name)] = args.split(marker, 1)[1].split("/", 1)[0]
        return found

    def namespace(self, host: str) -> str:
        ns = self._host(host).namespace
        if ns is None:
            raise ClusterError(f"{host} has no namespace")
        return str(ns)

    def link(self, host: str) -> str:
        """The root end of `host`'s management veth."""
        plan = LabNetPlan(prefix=self.prefix, hosts=len(self.names), link_mbit=LINK_MBIT)
        return plan.mgmt_root_veth(self.names.index(host) + 1)


class LabInjector(ProcessInjector):
    """Guest deaths by SIGKILL of their QEMU, link cuts by `ip link set down`."""

    cluster: LabCluster

    def __init__(self, cluster: LabCluster) -> None:
        super().__init__(cluster)
        self.cluster = cluster

    async def _kill_guest(self, kind: FaultKind, target: Target) -> Injected:
        host = target_host(kind, target)
        pid = await self._await_qemu(host, target.instance_id)
        status, far = await self._stream(target)
        await _sigkill(pid)
        said = f"SIGKILLed {target.instance}'s QEMU on {host} (pid {pid}; its stream: {status})"
        if kind is FaultKind.SOURCE_GUEST_KILL:
            # the destination holds the whole guest only once the stream completed
            return Injected(said, spares_target=status == "completed")
        # the source keeps the guest if its stream was still far from its end
        return Injected(said, spares_target=far)

    async def _await_qemu(self, host: str, instance_id: str, within: float = 5.0) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (pid := self.cluster.qemu_pid(host, instance_id)) is None:
            if loop.time() > deadline:
                raise FaultMissed(f"{host} ran no QEMU of the guest within {within:g}s")
            await asyncio.sleep(0.05)
        return pid

    async def _stream(self, target: Target) -> tuple[str, bool]:
        """The source's stream as it stands: its status, and whether it is due to end more than
        SAFE_ETA_S from now (so that the guest cannot have been handed over yet; while a local
        disk is still being copied its RAM has not even started)."""
        url = f"{self.cluster.agent_urls[target.source]}/v1/guests/{target.instance_id}/migration"
        try:
            response = await self.cluster.agent_http.get(url)
            reading: dict[str, Any] = response.json() if response.is_success else {}
        except (httpx.HTTPError, ValueError):
            return "unknown", False
        status = str(reading.get("status") or "none")
        rate = float(reading.get("throughput_mbps") or 0) * 1e6 / 8
        remaining = int(reading.get("remaining_bytes") or 0)
        if status == "mirroring":
            return status, True
        return status, status in IN_PROGRESS and bool(rate) and remaining / rate > SAFE_ETA_S

    async def _cut_link(self, host: str, down_s: float) -> str:
        link = self.cluster.link(host)
        await _ip("link", "set", link, "down")
        try:
            await asyncio.sleep(down_s)
        finally:
            await _ip("link", "set", link, "up")
        return f"cut {host}'s management and migration link ({link}) for {down_s:g}s"


def probes(cluster: Cluster) -> Probes:
    lab = _lab(cluster)

    async def ip_answers(instance: InstanceRecord) -> bool:
        return all([await _pings(ip, PING_WITHIN_S) for ip in instance.ips])

    async def leaks(host: str, guests: list[GuestCopy]) -> list[str]:
        known = {g.instance_id for g in guests}
        found = [
            f"QEMU pid {pid} of {ident}, which the agent does not list"
            for pid, ident in lab.qemu_processes(host).items()
            if ident not in known
        ]
        owners = {_owner(tap_name(ident, 0)) for ident in known}
        found += [
            f"tap {tap} of no listed instance"
            for tap in await _taps(lab.namespace(host))
            if _owner(tap) not in owners
        ]
        return found

    async def disk(host: str, instance_id: str) -> DiskReading | None:
        return await qemu_img_reading(lab.disk_path(host, instance_id))

    return Probes(ip_answers=ip_answers, leaks=leaks, disk=disk)


def backend(lab_dir: Path) -> Backend:
    """Runs on a lab in `lab_dir`, brought up for each run and down after it."""
    return Backend(
        cluster=lambda workdir, scenario: LabCluster(
            lab_dir, workdir, scenario.hosts, storage=scenario.storage.value
        ),
        injector=lambda cluster: LabInjector(_lab(cluster)),
        probes=probes,
        adapt=adapt,
        results="faults-lab.json",
        prime=prime,
    )


def _lab(cluster: Cluster) -> LabCluster:
    if not isinstance(cluster, LabCluster):
        raise TypeError(f"a lab backend was given a {type(cluster).__name__}")
    return cluster


# -- small helpers ------------------------------------------------------------------------------


def _owner(tap: str) -> str:
    """A tap's name without its NIC index (`fy<id digits>n<index>`)."""
    return tap.rsplit("n", 1)[0]


def _quiet(_line: str) -> None:
    pass


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def _sigkill(pid: int | None) -> None:
    """SIGKILL a process of the lab (a Ferry or QEMU process), and wait until it is gone."""
    if pid is None or not any(k in _cmdline(pid) for k in ("ferry", "qemu-system")):
        raise ClusterError(f"no process of the lab to kill (pid {pid})")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not _cmdline(pid):
            return
        await asyncio.sleep(0.05)


async def _ip(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode:
        raise ClusterError(f"ip {' '.join(args)}: {err.decode().strip()}")


async def _taps(namespace: str) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        "ip", "-n", namespace, "-o", "link", "show",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await proc.communicate()
    names = [line.split(":")[1].strip().split("@")[0] for line in out.decode().splitlines()]
    return [n for n in names if n.startswith(TAP_PREFIX)]


async def _pings(ip: str, within: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        proc = await asyncio.create_subprocess_exec(
            "ping", "-c", "1", "-W", "1", ip,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        if await proc.wait() == 0:
            return True
        await asyncio.sleep(0.5)
    return False


__all__ = ["LAB_PREFIX", "LabCluster", "LabInjector", "backend", "probes"]
