"""A fleet of simulated hosts served by one process: each host is a complete fake-driver agent.

Every host has what `ferry agent serve` gives one: its own certificate from the cluster CA (CN
and DNS SAN its name, IP SAN the loopback address), its own HTTPS port whose server trusts only
the controller's certificate, the agent API over its own `FakeDriver` (state file in its run
directory), and a `Reporter` that registers it with its agent URL and heartbeats with its guests.
The controller reaches each host with its real agent client, mutual TLS and hostname checks, as
it would reach a rack of machines; only the processes are fewer.

The listeners share one event loop (`fleet_server.Listeners`), so a thousand hosts cost one
process and no per-host timers. Registrations can be spread over `spread_s` seconds, which also
spreads the hosts' heartbeats evenly over the interval, as independent machines would be.

`ferry agent simulate --serve` runs a fleet until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from ferry.agent.config import AgentSettings, TlsSettings
from ferry.agent.drivers.base import Driver
from ferry.agent.fleet_server import Listeners, bind_loopback
from ferry.agent.reporter import Reporter
from ferry.agent.runtime import make_driver
from ferry.agent.server import create_agent_app
from ferry.pki.ca import IssuedCert, issue
from ferry.pki.store import write_file
from ferry.pki.tls import ssl_context_client, ssl_context_server_pinned
from ferry.protocol import Inventory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetSpec:
    controller_url: str
    token: str  # an agent-role token, shared by the fleet's hosts
    pki_dir: Path  # a cluster PKI holding its CA key: host certificates are issued from it
    run_dir: Path  # one directory per host below it (the fake driver's state file)
    count: int
    prefix: str = "host"
    inventory: Inventory = field(
        default_factory=lambda: Inventory(vcpus=8, ram_mb=16384, disk_gb=200)
    )
    networks: tuple[str, ...] = ("default",)
    controller_cert: Path | None = None  # default: the PKI's issued/controller/cert.pem
    spread_s: float = 0.0  # registrations spread evenly over this many seconds
    address: str = "127.0.0.1"

    @property
    def names(self) -> list[str]:
        return [f"{self.prefix}{index}" for index in range(1, self.count + 1)]

    @property
    def pinned_cert(self) -> Path:
        default = IssuedCert.at(self.pki_dir, "controller").cert
        return self.controller_cert or default


@dataclass
class FleetHost:
    settings: AgentSettings
    driver: Driver
    reporter: Reporter


def host_cert(pki_dir: Path, name: str, address: str) -> IssuedCert:
    """The host's certificate, issued once and reused by later fleets."""
    issued = IssuedCert.at(pki_dir, name)
    if issued.cert.exists() and issued.key.exists():
        return issued
    return issue(pki_dir, name, ips=[address])


def host_settings(
    spec: FleetSpec, name: str, port: int, cert: IssuedCert, token_file: Path
) -> AgentSettings:
    return AgentSettings(
        name=name,
        listen=f"{spec.address}:{port}",
        management_address=spec.address,
        migration_address=spec.address,
        controller_url=spec.controller_url,
        token_file=token_file,
        driver="fake",
        run_dir=spec.run_dir / name,
        networks=list(spec.networks),
        inventory=spec.inventory,
        tls=TlsSettings(ca=cert.ca, cert=cert.cert, key=cert.key, controller_cert=spec.pinned_cert),
    )


class Fleet:
    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.hosts: list[FleetHost] = []
        self.listeners = Listeners()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Issue certificates, open every host's listener, then start the reporters (spread)."""
        spec = self.spec
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        token_file = spec.run_dir / "agent.token"
        write_file(token_file, spec.token.encode(), mode=0o600, overwrite=True)
        certs = await asyncio.to_thread(
            lambda: [host_cert(spec.pki_dir, name, spec.address) for name in spec.names]
        )
        for name, cert in zip(spec.names, certs, strict=True):
            sock = bind_loopback(address=spec.address)
            try:
                await self._serve(name, sock, cert, token_file)
            except BaseException:
                sock.close()
                raise
        self._tasks.append(asyncio.create_task(self._report(), name="fleet-reporters"))

    async def _serve(
        self, name: str, sock: socket.socket, cert: IssuedCert, token_file: Path
    ) -> None:
        settings = host_settings(self.spec, name, sock.getsockname()[1], cert, token_file)
        tls = settings.tls
        driver = make_driver(settings)
        server_tls = ssl_context_server_pinned(cert=tls.cert, key=tls.key, peer=tls.controller_cert)
        await self.listeners.add(create_agent_app(driver, name), sock, server_tls)
        client_tls = ssl_context_client(cert=tls.cert, key=tls.key, ca=tls.ca)
        self.hosts.append(FleetHost(settings, driver, Reporter(settings, driver, client_tls)))

    async def _report(self) -> None:
        gap = self.spec.spread_s / max(len(self.hosts), 1)
        for host in self.hosts:
            name = f"reporter-{host.settings.name}"
            self._tasks.append(asyncio.create_task(host.reporter.run(), name=name))
            if gap:
                await asyncio.sleep(gap)

    async def registered(self) -> None:
        """Returns once every host has registered with the controller (after `start`)."""
        await asyncio.gather(*(h.reporter.registered.wait() for h in self.hosts))

    async def stop(self) -> None:
        for task in reversed(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.listeners.close()
        for host in self.hosts:
            with contextlib.suppress(Exception):
                await host.driver.close()


async def run(spec: FleetSpec, stop: asyncio.Event) -> None:
    """Serve the fleet until `stop` is set; log once every host has registered."""
    fleet = Fleet(spec)
    try:
        await fleet.start()
        ports = [h.settings.listen.rpartition(":")[2] for h in fleet.hosts]
        log.warning(
            "serving %d simulated host(s) %s..%s on %s, ports %s..%s",
            spec.count,
            spec.names[0],
            spec.names[-1],
            spec.address,
            ports[0],
            ports[-1],
        )
        ready = asyncio.create_task(fleet.registered())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([ready, stopping], return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            log.warning("all %d host(s) registered", spec.count)
            await stopping
        ready.cancel()
    finally:
        await fleet.stop()
