"""From database rows to scheduler candidates, and addresses for new ports."""

from __future__ import annotations

import ipaddress
import secrets
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Allocation, Host, Network, Port
from ferry.domain.errors import Conflict
from ferry.domain.host import AdminState, Liveness, MaintenanceState
from ferry.scheduler.basic import Candidate, Resources
from ferry.services.hosts import LivenessPolicy


def capacity(host: Host) -> Resources:
    return Resources(
        int((host.vcpus - host.reserved_vcpus) * host.cpu_allocation_ratio),
        int((host.ram_mb - host.reserved_ram_mb) * host.ram_allocation_ratio),
        int((host.disk_gb - host.reserved_disk_gb) * host.disk_allocation_ratio),
    )


async def candidates(session: AsyncSession, policy: LivenessPolicy) -> list[Candidate]:
    hosts = (await session.scalars(select(Host).order_by(Host.name))).all()
    used: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for alloc in (await session.scalars(select(Allocation))).all():
        totals = used[alloc.host_id]
        totals[0] += alloc.vcpus
        totals[1] += alloc.ram_mb
        totals[2] += alloc.disk_gb
    return [
        Candidate(
            name=host.name,
            up=policy.of(host) is Liveness.UP,
            enabled=host.admin_state == AdminState.ENABLED,
            in_service=host.maintenance_state == MaintenanceState.IN_SERVICE,
            capacity=capacity(host),
            used=Resources(*used[host.id]),
            networks=frozenset(host.networks),
        )
        for host in hosts
    ]


async def free_ip(session: AsyncSession, network: Network) -> str:
    """The lowest free host address of the network (the gateway is never handed out)."""
    net = ipaddress.ip_network(network.cidr)
    taken = set((await session.scalars(select(Port.ip).where(Port.network == network.name))).all())
    taken.add(network.gateway or "")
    for address in net.hosts():
        if str(address) not in taken:
            return str(address)
    raise Conflict(f"network {network.name} ({network.cidr}) has no free address")


async def free_mac(session: AsyncSession) -> str:
    """A locally administered unicast MAC in QEMU's customary 52:54:00 range, unused so far."""
    taken = set((await session.scalars(select(Port.mac))).all())
    while True:
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        if mac not in taken:
            return mac
