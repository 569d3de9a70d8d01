"""The agent's side of the control plane: register the host, then heartbeat with its guests, and
forward its guests' migration events as they come (events.py)."""

from __future__ import annotations

import asyncio
import logging
import ssl

import httpx

from ferry import __version__
from ferry.agent.config import AgentSettings
from ferry.agent.drivers.base import DiskInventory, Driver
from ferry.agent.events import EventForwarder
from ferry.agent.server import report
from ferry.protocol import Capabilities, Heartbeat, HostRegistration, Inventory, StorageReport

log = logging.getLogger(__name__)
MAX_BACKOFF = 10.0


async def registration(settings: AgentSettings, driver: Driver) -> HostRegistration:
    facts = await driver.facts()
    inventory = settings.inventory or Inventory(
        vcpus=facts.vcpus, ram_mb=facts.ram_mb, disk_gb=facts.disk_gb
    )
    return HostRegistration(
        name=settings.name,
        management_address=settings.management_address,
        migration_address=settings.migration_address,
        inventory=inventory,
        capabilities=Capabilities(
            cpu_model=facts.cpu_model,
            qemu_version=facts.qemu_version,
            machine_type=facts.machine_type,
            accelerator="kvm" if facts.accelerator == "kvm" else "tcg",
            networks=settings.networks,
        ),
        agent_version=__version__,
        agent_url=settings.agent_url,
        storage=storage_report(await driver.disks()),
    )


def storage_report(inventory: DiskInventory | None) -> StorageReport | None:
    if inventory is None:
        return None
    return StorageReport(
        kind="shared" if inventory.kind == "shared" else "local",
        pool=inventory.pool,
        total_gb=inventory.total_bytes >> 30,
        free_gb=inventory.free_bytes >> 30,
    )


class Reporter:
    """Registers (retrying with backoff until the controller answers), then heartbeats at the
    interval the controller asks for, re-registering if the controller forgot the host. The
    driver's migration events go to the controller through `events`, on the same client."""

    def __init__(self, settings: AgentSettings, driver: Driver, tls: ssl.SSLContext) -> None:
        self.settings = settings
        self.driver = driver
        token = settings.token_file.read_text().strip()
        self.client = httpx.AsyncClient(
            base_url=settings.controller_url,
            verify=tls,
            timeout=10,
            headers={"Authorization": f"Bearer {token}"},
        )
        self.interval = 10.0
        self.registered = asyncio.Event()
        self.events = EventForwarder(self.client, settings.name)
        driver.event_sink = self.events.notify

    async def run(self) -> None:
        forwarding = asyncio.create_task(self.events.run(), name="migration-events")
        try:
            while True:
                await self._register()
                while True:
                    if not await self._beat():
                        break
                    await asyncio.sleep(self.interval)
        finally:
            forwarding.cancel()
            await asyncio.gather(forwarding, return_exceptions=True)
            await self.client.aclose()

    async def _register(self) -> None:
        backoff = 0.5
        while True:
            try:
                body = (await registration(self.settings, self.driver)).model_dump()
                response = await self.client.post("/v1/agent/register", json=body)
                response.raise_for_status()
                self.interval = float(response.json()["heartbeat_interval"])
                self.registered.set()
                log.info("registered %s with %s", self.settings.name, self.settings.controller_url)
                return
            except (httpx.HTTPError, OSError) as exc:
                log.warning("registration failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _beat(self) -> bool:
        """False when the host must register again."""
        inventory = await self.driver.disks()
        sizes = inventory.allocated if inventory is not None else {}
        guests = [
            report(g).model_copy(update={"disk_bytes": sizes.get(g.id)})
            for g in await self.driver.list()
        ]
        storage = storage_report(inventory)
        beat = Heartbeat(guests=guests, storage_free_gb=storage.free_gb if storage else None)
        try:
            response = await self.client.post(
                f"/v1/agent/hosts/{self.settings.name}/heartbeat", json=beat.model_dump()
            )
        except httpx.HTTPError as exc:
            log.warning("heartbeat failed: %s", exc)
            return True
        if response.status_code == 404:
            return False
        if response.is_success:
            self.interval = float(response.json()["heartbeat_interval"])
        else:
            log.warning("heartbeat refused: %s %s", response.status_code, response.text)
        return True
