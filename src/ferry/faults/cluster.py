"""A whole cluster on 127.0.0.1 as real processes: a controller over HTTPS and one `ferry agent
serve` per host with the fake driver, mutual TLS from a fresh PKI, everything in one directory.

Every process is a child of this one, known by its PID: `kill` (SIGKILL) and `start` again
simulate crashes and restarts, and `stop` ends all of them (SIGTERM, then SIGKILL after a
grace period), so a run that fails or is interrupted leaves nothing behind. Ports are free ones
picked at start; nothing listens beyond loopback.

The configuration helpers (`controller_argv`, `controller_env`, `agent_toml`) are shared with
the functional tests' synchronous cluster.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from ferry.agent.drivers.fake_mirror import WIRE_ENV
from ferry.agent.storage import DISK_FILE
from ferry.pki.ca import IssuedCert, init_ca, issue
from ferry.pki.tls import ssl_context_client

FERRY = str(Path(sys.executable).parent / "ferry")
LOOPBACK = "127.0.0.1"
STOP_GRACE_S = 5.0
TEARDOWN_GRACE_S = 1.0  # a throwaway cluster: SIGTERM, then SIGKILL soon


class ClusterError(Exception):
    """The cluster could not be brought up or answered unexpectedly."""


class Cluster(Protocol):
    """What fault runs need of a cluster. `FakeCluster` is the one on fake hosts; a cluster of
    real hosts (the lab's namespaces and QEMU guests) provides the same, and the runner, the
    phase watcher and the invariant collection work on it unchanged."""

    names: list[str]  # its hosts, the drained ones first
    heartbeat_s: float
    agent_urls: dict[str, str]
    image: str | None  # the catalog image the runs' instances boot from (None: diskless)

    @property
    def database(self) -> Path | None:
        """The controller's SQLite database, when it can be read (claims), else None."""

    @property
    def agent_http(self) -> httpx.AsyncClient:
        """A client with the controller's certificate, for the agents' API."""

    def controller_tls(self) -> ssl.SSLContext: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def call(self, method: str, path: str, **kwargs: Any) -> Any: ...

    async def hosts_up(self) -> bool: ...

    async def kill_controller(self) -> None: ...

    async def start_controller(self) -> None: ...

    def controller_held(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The controller paused while several things happen that it must see as one."""

    async def kill_agent(self, name: str) -> None: ...

    async def start_agent(self, name: str) -> None: ...


_started: dict[int, asyncio.subprocess.Process] = {}


@atexit.register
def _kill_leftovers() -> None:
    """Last resort, should a run be torn down without stopping its cluster: SIGKILL the
    processes it started that still run (checked by PID and command line)."""
    for pid, proc in _started.items():
        if proc.returncode is None and _is_ferry(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _is_ferry(pid: int) -> bool:
    try:
        return b"ferry" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def controller_argv(state_dir: Path, port: int, log_level: str = "warning") -> list[str]:
    return [
        FERRY,
        *("controller", "serve", "--state-dir", str(state_dir)),
        *("--listen", f"{LOOPBACK}:{port}", "--log-level", log_level),
    ]


def controller_env(
    cert: IssuedCert, heartbeat_s: float = 1.0, reconcile_s: float = 0.2
) -> dict[str, str]:
    return {
        "FERRY_TLS_CERT": str(cert.cert),
        "FERRY_TLS_KEY": str(cert.key),
        "FERRY_TLS_CA": str(cert.ca),
        "FERRY_HEARTBEAT_INTERVAL": str(heartbeat_s),
        "FERRY_RECONCILE_INTERVAL": str(reconcile_s),
    }


@dataclass(frozen=True)
class AgentFiles:
    """What one agent's configuration points at."""

    name: str
    port: int
    controller_url: str
    token_file: Path
    run_dir: Path
    host_cert: IssuedCert
    controller_cert: Path


def agent_toml(
    files: AgentFiles,
    driver: str = "fake",
    networks: Sequence[str] = ("default",),
    inventory: tuple[int, int, int] = (4, 4096, 50),
    extra: dict[str, str] | None = None,
    storage: dict[str, str] | None = None,
) -> str:
    """The TOML of `ferry agent serve --config` for a host on 127.0.0.1; `storage`: its
    `[storage]` table (kind, path, pool, image_cache), else the agent's default (local, under
    its run directory)."""
    vcpus, ram_mb, disk_gb = inventory
    quoted = ", ".join(f'"{n}"' for n in networks)
    lines = [
        f'name = "{files.name}"',
        f'listen = "{LOOPBACK}:{files.port}"',
        f'management_address = "{LOOPBACK}"',
        f'migration_address = "{LOOPBACK}"',
        f'controller_url = "{files.controller_url}"',
        f'token_file = "{files.token_file}"',
        f'driver = "{driver}"',
        f'run_dir = "{files.run_dir}"',
        f"networks = [{quoted}]",
        *[f'{k} = "{v}"' for k, v in (extra or {}).items()],
        "[inventory]",
        f"vcpus = {vcpus}",
        f"ram_mb = {ram_mb}",
        f"disk_gb = {disk_gb}",
        "[tls]",
        f'ca = "{files.host_cert.ca}"',
        f'cert = "{files.host_cert.cert}"',
        f'key = "{files.host_cert.key}"',
        f'controller_cert = "{files.controller_cert}"',
    ]
    if storage is not None:
        lines += ["[storage]", *[f'{k} = "{v}"' for k, v in storage.items()]]
    return "\n".join(lines) + "\n"


@dataclass
class Process:
    """One child process, restartable; its output is appended to `log`."""

    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc else None

    async def start(self) -> None:
        if self.running:
            return
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env={**os.environ, **self.env},
            )
        _started[self.proc.pid] = self.proc

    async def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown code runs."""
        if self.proc is not None and self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        self._forget()

    def _forget(self) -> None:
        if self.proc is not None:
            _started.pop(self.proc.pid, None)

    async def stop(self, grace: float = STOP_GRACE_S) -> None:
        if self.proc is None or not self.running:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            await self.kill()
        self._forget()


async def all_hosts_up(cluster: Cluster) -> bool:
    """Whether the controller says every host of the cluster is up (False while it cannot say)."""
    try:
        up = await cluster.call("GET", "/v1/hosts?liveness=up")
    except (httpx.TransportError, ClusterError):
        return False
    return {h["name"] for h in up} >= set(cluster.names)


POOL = "faults"  # the fake hosts' shared storage pool
IMAGE = "faults"  # the small raw image every fault run's instances boot from
IMAGE_BYTES = 8 << 10


class FakeCluster:
    """A controller and `hosts` fake-driver agents named host1..hostN under `root`.

    With `storage` "shared" every host has shared storage in one pool (`POOL`, the directory
    `root/pool`); with "local" each host has its own (`root/<host>/disks`), so that every move
    copies the disk (the fake mirror), and a completed copy takes the source's content through
    `root/wire` (the fake driver's `FERRY_FAKE_WIRE`). Each host has an image cache of its own
    (`root/<host>/images`), and the catalog holds a small raw image (`IMAGE`, uploaded once at
    start): instances created with it have a disk (a small file of the fake driver), and each
    agent fetches and checks the image into its cache through the real path before it starts
    one."""

    def __init__(
        self,
        root: Path,
        hosts: int = 3,
        heartbeat_s: float = 1.0,
        reconcile_s: float = 0.2,
        inventory: tuple[int, int, int] = (4, 4096, 50),
        storage: str = "shared",
    ) -> None:
        self.root = root
        self.storage = storage
        self.names = [f"host{i}" for i in range(1, hosts + 1)]
        self.heartbeat_s = heartbeat_s
        self.reconcile_s = reconcile_s
        self.inventory = inventory
        self.pki = root / "pki"
        self.port = free_port()
        self.url = f"https://{LOOPBACK}:{self.port}"
        self.controller: Process | None = None
        self.agents: dict[str, Process] = {}
        self.agent_urls: dict[str, str] = {}
        self._api: httpx.AsyncClient | None = None
        self._agent_http: httpx.AsyncClient | None = None
        self.image: str | None = None

    # -- files --------------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def database(self) -> Path | None:
        return self.state_dir / "ferry.db"

    @property
    def pool_dir(self) -> Path:
        """The shared pool's directory: every host's instance disks."""
        return self.root / "pool"

    def disk_dir(self, host: str) -> Path:
        """Where `host` keeps instance disks: the shared pool, or its own directory."""
        return self.pool_dir if self.storage == "shared" else self.root / host / "disks"

    def disk_path(self, host: str, instance_id: str) -> Path:
        return self.disk_dir(host) / instance_id / DISK_FILE

    @property
    def admin_token(self) -> str:
        return (self.state_dir / "admin.token").read_text().strip()

    @property
    def controller_cert(self) -> IssuedCert:
        return IssuedCert.at(self.pki, "controller")

    def ca_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki / "ca-cert.pem"))

    def controller_tls(self) -> ssl.SSLContext:
        """The controller's client context: what agents accept."""
        cert = self.controller_cert
        return ssl_context_client(cert=cert.cert, key=cert.key, ca=cert.ca)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._issue_pki)
        self.controller = Process(
            controller_argv(self.state_dir, self.port),
            self.root / "controller.log",
            controller_env(self.controller_cert, self.heartbeat_s, self.reconcile_s),
        )
        await self.start_controller()
        for name in self.names:
            await self._configure_agent(name)
        await asyncio.gather(*(self.start_agent(name) for name in self.names))
        await self.upload_image()
        await self.wait_hosts_up(60)

    async def upload_image(self) -> None:
        """`IMAGE` in the catalog: a few KiB of raw disk (qemu-img checks it at upload)."""
        body = bytes(range(256)) * (IMAGE_BYTES // 256)
        await self.call(
            "POST",
            "/v1/images",
            params={"name": IMAGE, "format": "raw"},
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        self.image = IMAGE

    def _issue_pki(self) -> None:
        init_ca(self.pki)
        issue(self.pki, "controller", ips=[LOOPBACK], kind="controller")
        for name in self.names:
            issue(self.pki, name, ips=[LOOPBACK])

    async def _configure_agent(self, name: str) -> None:
        token = await self.call(
            "POST", "/v1/tokens", json={"name": f"agent-{name}", "role": "agent"}
        )
        token_file = self.root / f"{name}.token"
        token_file.write_text(token["secret"])
        port = free_port()
        files = AgentFiles(
            name,
            port,
            self.url,
            token_file,
            self.root / name,
            IssuedCert.at(self.pki, name),
            self.controller_cert.cert,
        )
        config = self.root / f"{name}.toml"
        storage = {"kind": self.storage, "path": str(self.disk_dir(name))}
        if self.storage == "shared":
            storage["pool"] = POOL
        storage["image_cache"] = str(self.root / name / "images")
        config.write_text(agent_toml(files, inventory=self.inventory, storage=storage))
        self.agent_urls[name] = f"https://{LOOPBACK}:{port}"
        self.agents[name] = Process(
            [FERRY, "agent", "serve", "--config", str(config), "--log-level", "warning"],
            self.root / f"{name}.log",
            {WIRE_ENV: str(self.root / "wire")},
        )

    async def start_controller(self) -> None:
        assert self.controller is not None
        await self.controller.start()
        await self._until(self.healthy, 60, "the controller to answer")

    async def kill_controller(self) -> None:
        assert self.controller is not None
        await self.controller.kill()

    @contextlib.asynccontextmanager
    async def controller_held(self) -> AsyncIterator[None]:
        """SIGSTOP the controller, SIGCONT it after: a fault's effects on several hosts (a
        guest dies here, its peer notices there) happen at once in life, so the controller must
        not see the moment in between."""
        pid = self.controller.pid if self.controller is not None else None
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    async def start_agent(self, name: str) -> None:
        await self.agents[name].start()

    async def kill_agent(self, name: str) -> None:
        await self.agents[name].kill()

    async def stop(self, grace: float = TEARDOWN_GRACE_S) -> None:
        """End every process this cluster started, whatever state it is in."""
        procs = [p for p in (self.controller, *self.agents.values()) if p is not None]
        await asyncio.gather(*(p.stop(grace) for p in procs), return_exceptions=True)
        for client in (self._api, self._agent_http):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._api = self._agent_http = None

    # -- talking to it ------------------------------------------------------------------------

    @property
    def api(self) -> httpx.AsyncClient:
        if self._api is None:
            self._api = httpx.AsyncClient(base_url=self.url, verify=self.ca_context(), timeout=30)
        return self._api

    @property
    def agent_http(self) -> httpx.AsyncClient:
        """A client with the controller's certificate, for the agents' API."""
        if self._agent_http is None:
            self._agent_http = httpx.AsyncClient(verify=self.controller_tls(), timeout=30)
        return self._agent_http

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.admin_token}", **kwargs.pop("headers", {})}
        response = await self.api.request(method, path, headers=headers, **kwargs)
        if response.is_error:
            raise ClusterError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    async def healthy(self) -> bool:
        try:
            return (await self.api.get("/v1/health")).status_code == 200
        except httpx.TransportError:
            return False

    async def hosts_up(self) -> bool:
        return await all_hosts_up(self)

    async def wait_hosts_up(self, within: float) -> None:
        await self._until(self.hosts_up, within, "every host to be up")

    @staticmethod
    async def _until(check: Any, within: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not await check():
            if loop.time() > deadline:
                raise ClusterError(f"timed out after {within:g}s waiting for {what}")
            await asyncio.sleep(0.1)
