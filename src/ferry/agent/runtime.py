"""One agent process: its HTTPS API (mutual TLS, pinned to the controller) and its reporter."""

from __future__ import annotations

import asyncio
import logging
import ssl

import httpx
import uvicorn

from ferry.agent.config import AgentSettings
from ferry.agent.dhcp import DhcpServer, keep_leases
from ferry.agent.drivers import kvm_probe
from ferry.agent.drivers.base import Driver, HostFacts
from ferry.agent.drivers.fake import FakeDriver
from ferry.agent.drivers.fake_disks import FakeDiskStore
from ferry.agent.images import ImageCache, ImageFetcher
from ferry.agent.reporter import Reporter
from ferry.agent.server import create_agent_app
from ferry.agent.storage import DiskStore
from ferry.config import parse_listen
from ferry.pki.tls import ssl_context_client, ssl_context_server_pinned

log = logging.getLogger(__name__)


def image_client(settings: AgentSettings) -> httpx.AsyncClient:
    """The agent's client for the controller's image files (its CA, its agent token)."""
    tls = settings.tls
    token = settings.token_file.read_text().strip()
    return httpx.AsyncClient(
        base_url=settings.controller_url,
        verify=ssl_context_client(cert=tls.cert, key=tls.key, ca=tls.ca),
        headers={"Authorization": f"Bearer {token}"},
    )


def make_driver(
    settings: AgentSettings, accel: str = "tcg", images: ImageFetcher | None = None
) -> Driver:
    """The host's driver; `accel` is the QEMU driver's accelerator (`accelerator` found it),
    `images` where it gets the images of instance disks."""
    if settings.driver == "fake":
        inv = settings.inventory
        facts = HostFacts(
            vcpus=inv.vcpus if inv else 8,
            ram_mb=inv.ram_mb if inv else 16384,
            disk_gb=inv.disk_gb if inv else 100,
            cpu_model="qemu64",
            qemu_version="7.2",
            machine_type="pc-q35-7.2",
        )
        settings.run_dir.mkdir(parents=True, exist_ok=True)
        return FakeDriver(
            facts,
            settings.run_dir / "fake-guests.json",
            disks=FakeDiskStore(settings.storage_settings),
            images=images,
        )
    from ferry.agent.drivers.qemu import QemuDriver  # noqa: PLC0415 - needs pyroute2 and QMP
    from ferry.agent.drivers.qemu_argv import QemuConfig, TlsFiles  # noqa: PLC0415

    assert settings.qemu is not None
    q, tls = settings.qemu, settings.tls
    return QemuDriver(
        QemuConfig(
            settings.run_dir,
            q.kernel,
            q.initrd,
            q.bridge,
            q.binary,
            machine_type=q.machine_type,
            cpu_model=q.cpu_model,
            accel=accel,
            tls=TlsFiles(tls.ca, tls.cert, tls.key),
            migration_listen=settings.migration_address,
        ),
        DiskStore(settings.storage_settings),
        images,
    )


async def serve_all(all_settings: list[AgentSettings]) -> None:
    """Run one agent per settings in this process (simulated hosts at scale share one)."""
    await asyncio.gather(*(serve(settings) for settings in all_settings))


async def accelerator(settings: AgentSettings) -> str:
    """kvm or tcg for the QEMU driver: as configured, or probed for `auto` (logged either way)."""
    if settings.qemu is None:
        return "tcg"
    q = settings.qemu
    result = await kvm_probe.probe(q.binary) if q.accel != "tcg" else None
    accel = kvm_probe.decide(q.accel, result)
    log.info(
        "%s: accelerator %s (configured %s%s)",
        settings.name,
        accel,
        q.accel,
        f"; probe: {result.reason}" if result else "",
    )
    return accel


LEASE_REFRESH_S = 3.0


async def start_dhcp(settings: AgentSettings, client: httpx.AsyncClient) -> list[DhcpServer]:
    """This host's DHCP servers, each with the controller's leases when it answers now (else
    from the next refresh on)."""
    bridge = settings.qemu.bridge if settings.qemu else "br-inst"
    servers = [DhcpServer(dhcp, bridge, settings.run_dir) for dhcp in settings.dhcp]
    for server in servers:
        try:
            await server.refresh(client)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            log.warning("leases of %s not read yet: %s", server.settings.network, exc)
        await server.start()
    return servers


async def serve(settings: AgentSettings) -> None:
    images = image_client(settings)
    cache = ImageCache(settings.storage_settings.image_cache, images)
    driver = make_driver(settings, await accelerator(settings), cache)
    dhcp = await start_dhcp(settings, images)
    tls = settings.tls
    server_tls: ssl.SSLContext = ssl_context_server_pinned(
        cert=tls.cert, key=tls.key, peer=tls.controller_cert
    )
    reporter = Reporter(settings, driver, ssl_context_client(cert=tls.cert, key=tls.key, ca=tls.ca))
    host, port = parse_listen(settings.listen)
    config = uvicorn.Config(
        create_agent_app(driver, settings.name, dhcp),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
    )
    config.load()
    config.ssl = server_tls  # uvicorn cannot express a pinned peer; give it the context whole
    server = uvicorn.Server(config)
    reporting = asyncio.create_task(reporter.run(), name="reporter")
    leases = asyncio.create_task(keep_leases(dhcp, images, LEASE_REFRESH_S), name="leases")
    try:
        await server.serve()
    finally:
        reporting.cancel()
        leases.cancel()
        await asyncio.gather(reporting, leases, return_exceptions=True)
        await driver.close()
        await images.aclose()
