"""Simulated hosts: register N hosts with the controller and keep them heartbeating.

A stand-in for real agents when exploring the controller (demo, tests); the per-host agent with
real drivers replaces it. Addresses come from 198.18.0.0/15 and are never contacted.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx

from ferry.protocol import Capabilities, HostRegistration, Inventory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulatedFleet:
    url: str
    token: str
    count: int
    prefix: str = "host"
    vcpus: int = 8
    ram_mb: int = 16384
    disk_gb: int = 200


def registrations(fleet: SimulatedFleet) -> list[HostRegistration]:
    return [
        HostRegistration(
            name=f"{fleet.prefix}{index}",
            management_address=f"198.18.0.{10 + index}",
            migration_address=f"198.18.0.{10 + index}",
            inventory=Inventory(vcpus=fleet.vcpus, ram_mb=fleet.ram_mb, disk_gb=fleet.disk_gb),
            capabilities=Capabilities(
                cpu_model="qemu64",
                qemu_version="7.2",
                machine_type="pc-q35-7.2",
                networks=["default"],
            ),
            agent_version="simulated",
        )
        for index in range(1, fleet.count + 1)
    ]


async def run(fleet: SimulatedFleet, *, stop: asyncio.Event | None = None) -> None:
    """Register every host, then heartbeat at the interval the controller asks for."""
    stop = stop or asyncio.Event()
    headers = {"Authorization": f"Bearer {fleet.token}"}
    async with httpx.AsyncClient(base_url=fleet.url, headers=headers, timeout=10) as client:
        interval = 10.0
        for reg in registrations(fleet):
            response = await client.post("/v1/agent/register", json=reg.model_dump())
            response.raise_for_status()
            interval = float(response.json()["heartbeat_interval"])
            log.info("registered %s", reg.name)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                await _beat_all(client, fleet)


async def _beat_all(client: httpx.AsyncClient, fleet: SimulatedFleet) -> None:
    for index in range(1, fleet.count + 1):
        try:
            response = await client.post(f"/v1/agent/hosts/{fleet.prefix}{index}/heartbeat")
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("heartbeat of %s%d failed: %s", fleet.prefix, index, exc)
