"""The host's DHCP service of an instance network: dnsmasq serving fixed leases, as Neutron's DHCP
agent does.

Every host that offers the network runs one, on its instance bridge with an address of its own
(`[[dhcp]]` in the agent's settings), and serves every port of the network: the controller's
port records (MAC to IP, the instance's name as hostname) at `GET /v1/agent/networks/{name}/
leases`, re-read each `refresh_s` (a conditional request: an unchanged list costs a 304) and,
for a guest this host starts or receives, from its spec at once. dnsmasq answers only those MACs
(`static` range) and re-reads its hosts file on SIGHUP. It is not authoritative: an authoritative
dnsmasq answers a client's broadcast REQUEST for another server's offer with a NAK ("wrong
server-ID"), which sends the client back to discovery, so with several servers a guest could
bounce between them; each host's server ACKs only what it offered or knows from its hosts file.
A guest renews with the server that gave its lease; when that one is gone (down, drained,
removed) its renewals go unanswered, and once the lease runs out it discovers again and another
host's server offers the same fixed address (measured in the lab with 120 s leases: the server
that gave the lease killed, the guest bound the same address from another host 95 s later and
renewed there since, answering ping throughout), so no single host holds the network's DHCP.

dnsmasq runs daemonized with a pid file in `<run_dir>/dhcp-<network>/`: like the guests, it
outlives an agent restart, and a restarted agent adopts it (by pid file and command line) rather
than start a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ferry.agent.config import DhcpSettings
from ferry.agent.drivers.base import PortSpec

log = logging.getLogger(__name__)


class DhcpError(Exception):
    pass


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    hostname: str

    def line(self) -> str:
        return f"{self.mac},{self.ip},{self.hostname}"


def dnsmasq_argv(settings: DhcpSettings, bridge: str, workdir: Path) -> list[str]:
    """dnsmasq for one network: DHCP only, fixed leases from the hosts file, options (the
    router) from the options file; it re-reads both on SIGHUP."""
    network = ipaddress.IPv4Interface(settings.address).network
    argv = [
        settings.binary,
        "--conf-file=/dev/null",
        "--port=0",  # no DNS
        "--no-resolv",
        "--no-hosts",
        f"--interface={bridge}",
        "--bind-interfaces",
        "--except-interface=lo",
        f"--dhcp-range={network.network_address},static,{network.netmask},{settings.lease_s}s",
        f"--dhcp-hostsfile={workdir / 'hosts'}",
        f"--dhcp-leasefile={workdir / 'leases'}",
        f"--pid-file={workdir / 'dnsmasq.pid'}",
        f"--log-facility={workdir / 'dnsmasq.log'}",
        "--log-dhcp",
        f"--dhcp-optsfile={workdir / 'options'}",
        # It stays root: its files are in the agent's run directory, which only root may enter
        # (the lab's are under 0700 directories), and it re-reads them on every SIGHUP.
        "--user=root",
        "--group=root",
    ]
    return argv


class DhcpServer:
    """One network's dnsmasq on this host, and the leases it serves."""

    def __init__(self, settings: DhcpSettings, bridge: str, run_dir: Path) -> None:
        self.settings = settings
        self.bridge = bridge
        self.workdir = run_dir / f"dhcp-{settings.network}"
        self.leases: dict[str, Lease] = {}  # by MAC
        self.local: dict[str, Lease] = {}  # from specs this host started, until listed
        self.gateway: str | None = None
        self._etag: str | None = None

    @property
    def hosts_file(self) -> Path:
        return self.workdir / "hosts"

    def pid(self) -> int | None:
        try:
            pid = int((self.workdir / "dnsmasq.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"dnsmasq" in cmdline and str(self.workdir).encode() in cmdline else None

    async def start(self) -> None:
        """Address on the bridge, hosts file, then dnsmasq (adopted when it runs already)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        await add_address(self.bridge, self.settings.address)
        self._write()
        if self.pid() is not None:
            log.info("dnsmasq of %s runs already (pid %s)", self.settings.network, self.pid())
            self.reload()
            await self.release_stale()
            return
        argv = dnsmasq_argv(self.settings, self.bridge, self.workdir)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _out, err = await proc.communicate()  # dnsmasq daemonizes once it listens
        if proc.returncode != 0:
            why = err.decode(errors="replace").strip() or f"exit {proc.returncode}"
            raise DhcpError(f"dnsmasq for {self.settings.network} did not start: {why}")
        (self.workdir / "argv.json").write_text(json.dumps(argv))
        await self.release_stale()  # it read its lease file: ports deleted meanwhile

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def add_ports(self, name: str, ports: Iterable[PortSpec]) -> None:
        """A guest this host starts or receives: serve its lease now, before the list has it."""
        changed = False
        for port in ports:
            if port.network != self.settings.network:
                continue
            lease = Lease(port.mac, port.ip.split("/")[0], name)
            if self.leases.get(lease.mac) != lease:
                self.local[lease.mac] = lease
                changed = True
        if changed:
            self._write()
            self.reload()

    def replace(self, leases: list[Lease], gateway: str | None) -> bool:
        """The controller's list; True when the served set changed."""
        new = {lease.mac: lease for lease in leases}
        self.local = {mac: lease for mac, lease in self.local.items() if mac not in new}
        changed = new != self.leases or gateway != self.gateway
        self.leases, self.gateway = new, gateway
        if changed:
            self._write()
            self.reload()
        return changed

    def served(self) -> list[Lease]:
        return sorted({**self.local, **self.leases}.values(), key=lambda lease: lease.ip)

    def _write(self) -> None:
        hosts = "".join(f"{lease.line()}\n" for lease in self.served())
        _write_file(self.hosts_file, hosts)
        _write_file(
            self.workdir / "options", f"option:router,{self.gateway}\n" if self.gateway else ""
        )

    def reload(self) -> None:
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    async def refresh(self, client: httpx.AsyncClient) -> None:
        """Read the network's leases from the controller (304 when unchanged)."""
        headers = {"If-None-Match": self._etag} if self._etag else {}
        response = await client.get(
            f"/v1/agent/networks/{self.settings.network}/leases", headers=headers
        )
        if response.status_code == 304:
            return
        response.raise_for_status()
        body = response.json()
        leases = [Lease(item["mac"], item["ip"], item["hostname"]) for item in body["leases"]]
        if self.replace(leases, body.get("gateway")):
            log.info("%s: serving %d leases", self.settings.network, len(self.leases))
            await self.release_stale()
        self._etag = response.headers.get("ETag")

    def granted(self) -> list[Lease]:
        """The leases dnsmasq holds now, from its lease file (expiry, MAC, IP, hostname, id)."""
        try:
            lines = (self.workdir / "leases").read_text().splitlines()
        except FileNotFoundError:
            return []
        held = []
        for line in lines:
            fields = line.split()
            if len(fields) >= 4:
                held.append(Lease(fields[1], fields[2], fields[3]))
        return held

    async def release_stale(self) -> list[Lease]:
        """Release every lease dnsmasq holds for a MAC it no longer serves. An address is
        reused as soon as its instance is deleted, and dnsmasq refuses to give an address that a
        lease of another MAC still holds ("no address available") until that lease expires;
        Neutron's DHCP agent releases them the same way (`dhcp_release`, dnsmasq-utils)."""
        served = {lease.mac for lease in self.served()}
        stale = [lease for lease in self.granted() if lease.mac not in served]
        for lease in stale:
            proc = await asyncio.create_subprocess_exec(
                self.settings.release_binary, self.bridge, lease.ip, lease.mac,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _out, err = await proc.communicate()
            if proc.returncode != 0:
                log.warning("releasing %s of %s failed: %s", lease.ip, lease.mac, err.decode())
        return stale


def _write_file(path: Path, text: str) -> None:
    """Replace `path` whole: dnsmasq may read it at any moment."""
    temp = path.with_name(f".{path.name}.new")
    temp.write_text(text)
    temp.chmod(0o644)
    temp.replace(path)


async def add_address(bridge: str, address: str) -> None:
    """`address` (ADDR/PREFIX) on `bridge`; nothing when it is there already."""
    iface = ipaddress.IPv4Interface(address)
    ipr = AsyncIPRoute(groups=0)
    try:
        found = await ipr.link_lookup(ifname=bridge)
        if not found:
            raise DhcpError(f"bridge {bridge!r} does not exist in this namespace")
        with contextlib.suppress(NetlinkError):  # EEXIST: it is there
            await ipr.addr(
                "add", index=found[0], address=str(iface.ip), prefixlen=iface.network.prefixlen
            )
    finally:
        ipr.close()


async def keep_leases(
    servers: list[DhcpServer], client: httpx.AsyncClient, refresh_s: float
) -> None:
    """Refresh every server's leases from the controller every `refresh_s`, for good."""
    while True:
        for server in servers:
            try:
                await server.refresh(client)
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                log.warning("leases of %s not refreshed: %s", server.settings.network, exc)
        await asyncio.sleep(refresh_s)
