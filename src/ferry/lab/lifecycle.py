"""Bringing a lab up and down (see lab/cluster.py for the shape of a lab)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ferry.agent.drivers import kvm_probe
from ferry.lab import net
from ferry.lab.cluster import (
    CONTROLLER_PORT,
    FERRY,
    HostRecord,
    LabRecord,
    QemuSetup,
    agent_config,
    instance_gateway,
    issue_certificates,
    lab_processes,
    plan_hosts,
    start_detached,
    stop_pid,
)
from ferry.lab.net_plan import INST_FIRST_INSTANCE, INST_NETWORK, MGMT_ROOT_IP, LabNetPlan

Say = Callable[[str], None]


class LabError(Exception):
    pass


@dataclass(frozen=True)
class LabOptions:
    lab_dir: Path
    hosts: int = 3
    instances: int = 0
    link_mbit: int | None = 1000
    driver: str = "qemu"
    prefix: str = "fry"
    storage: str = "shared"  # instance disks: shared (one pool) or local (each host's own)


class ControllerApi:
    def __init__(self, record: LabRecord) -> None:
        env = record.env()
        self.http = httpx.AsyncClient(
            base_url=record.controller_url,
            timeout=30,
            verify=ssl.create_default_context(cafile=env["FERRY_CA"]),
        )
        self.token_file = Path(env["FERRY_TOKEN_FILE"])

    async def call(
        self, method: str, path: str, extra_headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        token = self.token_file.read_text().strip()
        headers = {"Authorization": f"Bearer {token}", **(extra_headers or {})}
        response = await self.http.request(method, path, **kwargs, headers=headers)
        if response.is_error:
            raise LabError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    async def healthy(self) -> bool:
        try:
            return (await self.http.get("/v1/health")).status_code == 200
        except httpx.TransportError:
            return False


async def wait_for(check: Callable[[], Any], what: str, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.2)
    raise LabError(f"timed out after {seconds:g}s waiting for {what}")


async def up(opts: LabOptions, say: Say) -> LabRecord:
    lab_dir = opts.lab_dir.resolve()
    if LabRecord.load(lab_dir) is not None:
        raise LabError(f"a lab is recorded in {lab_dir}; `ferry lab down` first")
    lab_dir.mkdir(parents=True, exist_ok=True)
    plan, hosts = plan_hosts(opts.prefix, opts.hosts, opts.driver, opts.link_mbit)
    controller_ip = str(MGMT_ROOT_IP) if plan else "127.0.0.1"
    port = CONTROLLER_PORT if plan else _free_port()
    record = LabRecord(
        opts.prefix, opts.driver, str(lab_dir), f"https://{controller_ip}:{port}", hosts=hosts
    )
    record.save()
    image = await _prepare_image(lab_dir, say) if plan else None
    disk = await _prepare_disk(lab_dir, say) if plan else None
    if plan is not None:
        say(f"network: {opts.hosts} host namespaces, links shaped to {opts.link_mbit} Mbit/s")
        await net.create_lab(plan)
    say("pki: cluster CA, controller and host certificates")
    await asyncio.to_thread(issue_certificates, lab_dir, controller_ip, hosts)
    await start_controller(record)
    api = ControllerApi(record)
    await wait_for(api.healthy, "the controller", 30)
    say(f"controller: {record.controller_url} (pid {record.controller_pid})")
    qemu = QemuSetup(*image, await lab_accelerator(say)) if image else None
    await _start_agents(record, api, plan, qemu, opts.storage)
    await wait_for(lambda: _all_up(api, len(hosts)), f"{len(hosts)} hosts to register", 60)
    say(f"agents: {', '.join(h.name for h in hosts)} registered")
    await api.call(
        "POST", "/v1/flavors", json={"name": "tiny", "vcpus": 1, "ram_mb": 128, "disk_gb": 1}
    )
    await api.call("POST", "/v1/networks", json=lab_network())
    if disk is not None:
        await upload_image(api, LAB_IMAGE, disk)
        say(f"image {LAB_IMAGE}: {disk.name} registered ({opts.storage} storage for disks)")
    await create_instances(api, opts.instances, say, LAB_IMAGE if disk else None)
    return record


LAB_IMAGE = "lab"


def lab_network() -> dict[str, Any]:
    """The instance network: addresses from 198.19.1.1 on; 198.19.0.0/24 is the lab's own (the
    root namespace's 198.19.0.1, the hosts' DHCP servers at 198.19.0.(10+i))."""
    return {
        "name": "lab",
        "cidr": str(INST_NETWORK),
        "gateway": instance_gateway(),
        "allocation_start": str(INST_FIRST_INSTANCE),
    }


def dhcp_address(index: int) -> str:
    return f"{INST_NETWORK.network_address + 10 + index}/{INST_NETWORK.prefixlen}"


async def upload_image(api: ControllerApi, name: str, path: Path) -> None:
    """Register `path` (qcow2) in the controller's catalog, streamed."""

    async def chunks() -> AsyncIterator[bytes]:
        with path.open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, 1 << 20):
                yield chunk

    await api.call(
        "POST",
        "/v1/images",
        params={"name": name, "format": "qcow2"},
        content=chunks(),
        extra_headers={"Content-Type": "application/octet-stream"},
    )


async def create_instances(
    api: ControllerApi, count: int, say: Say, image: str | None = None
) -> None:
    for index in range(1, count + 1):
        body = {"name": f"vm{index}", "flavor": "tiny", "network": "lab"}
        await api.call("POST", "/v1/instances", json={**body, "image": image} if image else body)

    async def settled() -> bool:
        states = [i["state"] for i in await api.call("GET", "/v1/instances")]
        return all(s in ("running", "error") for s in states)

    if count:
        await wait_for(settled, f"{count} instances to boot", 60 + 30 * count)
        for inst in await api.call("GET", "/v1/instances"):
            ip = inst["ports"][0]["ip"] if inst["ports"] else "-"
            say(
                f"instance {inst['name']}: {inst['state']} on {inst['host']} at {ip}"
                + (f" ({inst['error']})" if inst["error"] else "")
            )


async def _prepare_image(lab_dir: Path, say: Say) -> tuple[Path, Path]:
    from ferry.lab.image import build_image  # noqa: PLC0415

    image = await asyncio.to_thread(build_image, lab_dir / "image")
    say(f"image: {image.kernel.name} + {image.initrd.name} ({image.kernel_version})")
    return image.kernel, image.initrd


async def _prepare_disk(lab_dir: Path, say: Say) -> Path:
    from ferry.lab.image_disk import build_disk_image  # noqa: PLC0415

    disk = await asyncio.to_thread(build_disk_image, lab_dir / "image")
    size = disk.path.stat().st_size >> 20
    say(f"disk image: {disk.path.name}, {size} MiB ({disk.virtual_size >> 20} MiB virtual)")
    return disk.path


async def lab_accelerator(say: Say) -> str:
    """Every lab host is this machine: the KVM probe runs once, and each agent is told its
    result (`accel`), instead of each agent probing at every start."""
    result = await kvm_probe.probe()
    accel = kvm_probe.decide("auto", result)
    say(f"accelerator: {accel} ({result.reason})")
    return accel


def heartbeat_interval(hosts: int) -> int:
    """2 s for small labs (liveness shows quickly); large ones keep the controller's heartbeat
    load near 20 per second: 500 hosts beat every 25 s."""
    return max(2, hosts // 20)


async def start_controller(record: LabRecord) -> None:
    """Start the lab's controller (again, after a crash: same command line, state and
    certificate) and record its PID."""
    lab_dir = Path(record.dir)
    issued = lab_dir / "pki" / "issued" / "controller"
    listen = record.controller_url.removeprefix("https://")
    record.controller_pid = await start_detached(
        [
            FERRY,
            "controller",
            "serve",
            "--state-dir",
            str(lab_dir / "state"),
            "--listen",
            listen,
            "--log-level",
            "warning",
        ],
        lab_dir / "controller.log",
        {
            "FERRY_TLS_CERT": str(issued / "cert.pem"),
            "FERRY_TLS_KEY": str(issued / "key.pem"),
            "FERRY_TLS_CA": str(issued / "ca.pem"),
            "FERRY_HEARTBEAT_INTERVAL": str(heartbeat_interval(len(record.hosts))),
            "FERRY_RECONCILE_INTERVAL": "0.5",
        },
    )
    record.save()


FAKE_HOSTS_PER_PROCESS = 50


async def _start_agents(
    record: LabRecord,
    api: ControllerApi,
    plan: LabNetPlan | None,
    qemu: QemuSetup | None,
    storage: str,
) -> None:
    """One agent process per real host (inside its namespace); simulated hosts share processes,
    FAKE_HOSTS_PER_PROCESS each, so a 500-host lab costs ten processes, not five hundred."""
    lab_dir = Path(record.dir)
    configs: list[tuple[HostRecord, Path]] = []
    for index, host in enumerate(record.hosts, start=1):
        token = await api.call(
            "POST", "/v1/tokens", json={"name": f"agent-{host.name}", "role": "agent"}
        )
        dhcp = dhcp_address(index) if plan is not None else None
        config = agent_config(
            lab_dir, host, record.controller_url, record.driver, qemu, storage, dhcp
        )
        (config.parent / "agent.token").write_text(token["secret"])
        configs.append((host, config))
    per_process = 1 if plan is not None else FAKE_HOSTS_PER_PROCESS
    for start in range(0, len(configs), per_process):
        batch = configs[start : start + per_process]
        pid = await _start_agent_process(batch[0][0], [config for _host, config in batch])
        for host, _config in batch:
            host.pid = pid
    record.save()


async def start_agent(record: LabRecord, host: HostRecord) -> None:
    """Start one real host's agent (again, after a crash: same configuration and token) in its
    namespace, and record its PID."""
    config = Path(record.dir) / "hosts" / host.name / "agent.toml"
    host.pid = await _start_agent_process(host, [config])
    record.save()


async def _start_agent_process(first: HostRecord, configs: list[Path]) -> int:
    argv = [FERRY, "agent", "serve", "--log-level", "warning"]
    for config in configs:
        argv += ["--config", str(config)]
    if first.namespace:
        argv = ["ip", "netns", "exec", first.namespace, *argv]
    return await start_detached(argv, configs[0].parent / "agent.log")


async def _all_up(api: ControllerApi, count: int) -> bool:
    hosts = await api.call("GET", "/v1/hosts", params={"liveness": "up"})
    return len(hosts) >= count


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def down(lab_dir: Path, prefix: str, say: Say) -> None:
    """Stop what the record names, then remove everything named after the prefix."""
    record = await asyncio.to_thread(LabRecord.load, lab_dir)
    pids = set(await asyncio.to_thread(lab_processes, lab_dir))
    if record is not None:
        prefix = record.prefix
        pids |= {h.pid for h in record.hosts if h.pid} | {record.controller_pid or 0}
    await asyncio.gather(*(stop_pid(pid) for pid in sorted(pids - {0})))
    say(f"stopped {len(pids - {0})} lab process(es)")
    if record is None or record.driver != "fake":
        # A real lab (or one whose record is lost): remove everything named after its prefix.
        report = await net.teardown(prefix)
        say(
            f"removed namespaces {report.namespaces or '-'}, links {report.links or '-'}; "
            f"killed {len(report.killed)} process(es) left in them"
        )
    if record is not None:
        for leftover in ("lab.json", "state", "hosts", "shared-disks"):
            path = Path(record.dir) / leftover
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


__all__ = [
    "HostRecord",
    "LabError",
    "LabOptions",
    "create_instances",
    "down",
    "start_agent",
    "start_controller",
    "up",
]
