"""The scale bench's cluster on 127.0.0.1: a PKI, one real controller process (`ferry controller
serve`, SQLite in a state directory) and one fleet process (`ferry agent simulate --serve`)
serving every simulated host's agent API over mutual TLS.

Every process started here is stopped by `stop()` (SIGTERM, then SIGKILL), which the bench calls
in a `finally`; each child is also started under `setpriv --pdeathsig SIGTERM` when the tool is
there, so it ends if the bench itself is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ferry.bench.scale_stats import cpu_seconds
from ferry.pki.ca import IssuedCert, init_ca, issue

FERRY = str(Path(sys.executable).parent / "ferry")
TICKS = os.sysconf("SC_CLK_TCK")


class ScaleError(Exception):
    """The bench cannot go on; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (threads included)."""
    return cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), TICKS)


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise ScaleError(f"the {self.name} exited with {code}; see {self.log}")

    async def stop(self, grace: float = 15.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        for _ in range(int(grace * 10)):
            if self.popen.poll() is not None:
                return
            await asyncio.sleep(0.1)
        self.popen.kill()
        self.popen.wait()


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str]) -> Child:
    """Start a child that ends with the bench (see the module docstring)."""
    guard = ["setpriv", "--pdeathsig", "SIGTERM", "--"] if shutil.which("setpriv") else []
    with log.open("ab") as out:
        popen = subprocess.Popen(  # noqa: S603 - our own console script, argv built here
            [*guard, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env={**os.environ, **env},
        )
    return Child(name, popen, log)


@dataclass(frozen=True)
class ClusterOptions:
    hosts: int
    heartbeat_interval: float
    reconcile_interval: float
    vcpus: int
    ram_mb: int
    spread_s: float
    networks: list[str]


@dataclass
class ScaleCluster:
    root: Path
    options: ClusterOptions
    children: list[Child] = field(default_factory=list)
    controller: Child | None = None
    fleet: Child | None = None

    def __post_init__(self) -> None:
        self.pki = self.root / "pki"
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.controller_cert: IssuedCert | None = None

    @property
    def ca(self) -> Path:
        return self.pki / "ca-cert.pem"

    def tls(self, client_cert: IssuedCert | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if client_cert is not None:
            context.load_cert_chain(str(client_cert.cert), str(client_cert.key))
        return context

    @property
    def admin_token(self) -> str:
        return (self.root / "state" / "admin.token").read_text().strip()

    def client(self, token: str | None = None, connections: int = 32) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            verify=self.tls(),
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            timeout=httpx.Timeout(120.0, connect=10.0),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    def agent_client(self) -> httpx.AsyncClient:
        """A client that speaks to the agents as the controller does (its certificate)."""
        assert self.controller_cert is not None
        context = self.tls(self.controller_cert)
        return httpx.AsyncClient(verify=context, timeout=30.0)

    async def start(self) -> None:
        await asyncio.to_thread(self._pki)
        self.controller = self._start_controller()
        await self._wait_healthy()
        async with self.client() as api:
            body = {"name": "scale-fleet", "role": "agent"}
            token = (await api.post("/v1/tokens", json=body)).raise_for_status().json()["secret"]
        self.fleet = self._start_fleet(token)

    def _pki(self) -> None:
        init_ca(self.pki)
        self.controller_cert = issue(self.pki, "controller", ips=["127.0.0.1"], kind="controller")

    def _start_controller(self) -> Child:
        cert = self.controller_cert
        assert cert is not None
        argv = [FERRY, "controller", "serve", "--state-dir", str(self.root / "state"),
                "--listen", f"127.0.0.1:{self.port}", "--log-level", "warning"]  # fmt: skip
        env = {
            "FERRY_TLS_CERT": str(cert.cert),
            "FERRY_TLS_KEY": str(cert.key),
            "FERRY_TLS_CA": str(cert.ca),
            "FERRY_HEARTBEAT_INTERVAL": f"{self.options.heartbeat_interval:g}",
            "FERRY_RECONCILE_INTERVAL": f"{self.options.reconcile_interval:g}",
        }
        child = spawn("controller", argv, self.root / "controller.log", env)
        self.children.append(child)
        return child

    def _start_fleet(self, token: str) -> Child:
        o = self.options
        argv = [FERRY, "agent", "simulate", "--serve", "--hosts", str(o.hosts),
                "--vcpus", str(o.vcpus), "--ram-mb", str(o.ram_mb), "--disk-gb", "100",
                "--pki", str(self.pki), "--run-dir", str(self.root / "fleet"),
                "--spread", f"{o.spread_s:g}",
                *[arg for name in o.networks for arg in ("--network", name)]]  # fmt: skip
        env = {"FERRY_URL": self.url, "FERRY_TOKEN": token, "FERRY_CA": str(self.ca)}
        child = spawn("fleet", argv, self.root / "fleet.log", env)
        self.children.append(child)
        return child

    async def _wait_healthy(self, within_s: float = 60.0) -> None:
        async with httpx.AsyncClient(verify=self.tls(), timeout=5.0) as http:
            for _ in range(int(within_s * 5)):
                assert self.controller is not None
                self.controller.check()
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{self.url}/v1/health")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise ScaleError(f"the controller did not answer within {within_s:g}s")

    def check(self) -> None:
        for child in self.children:
            child.check()

    def cpu(self) -> tuple[float, float]:
        """CPU seconds of the controller and of the fleet so far."""
        assert self.controller is not None and self.fleet is not None
        return process_cpu(self.controller.pid), process_cpu(self.fleet.pid)

    async def stop(self) -> None:
        """The controller first: agents that vanish under a running controller would have it
        record failures nobody caused."""
        for child in self.children:
            await child.stop()


async def call(api: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
    """One API call; a refusal becomes a ScaleError naming the call and the controller's reason."""
    response = await api.request(method, path, **kwargs)
    if response.is_error:
        raise ScaleError(f"{method} {path}: {response.status_code} {response.text[:300]}")
    return response.json() if response.content else None
