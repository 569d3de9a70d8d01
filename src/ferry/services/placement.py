"""Placement against the database: hosts as scheduler candidates, server groups, claims, the
evacuation plan of a host, and addresses for new ports.

A claim is the decision and its allocation in one transaction. On SQLite the controller's writes
are serialized; on a database several processes share, the claim also bumps the chosen host's
version, so of two racing decisions for one host only one commits (the other retries)."""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections import Counter

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from ferry.db.models import Allocation, Host, Instance, Migration, Network, Port, ServerGroup
from ferry.domain.errors import Conflict
from ferry.domain.host import AdminState, Liveness, MaintenanceState
from ferry.domain.instance import InstanceState
from ferry.domain.migration import ACTIVE_MIGRATION_STATES
from ferry.scheduler.framework import NoValidHost, Scheduler
from ferry.scheduler.model import Candidate, Group, GroupPolicy, Request, Resources, Traits
from ferry.scheduler.planner import Movable, Plan, plan_evacuation
from ferry.services.hosts import LivenessPolicy

log = logging.getLogger(__name__)


def capacity(host: Host) -> Resources:
    return Resources(
        int((host.vcpus - host.reserved_vcpus) * host.cpu_allocation_ratio),
        int((host.ram_mb - host.reserved_ram_mb) * host.ram_allocation_ratio),
        int((host.disk_gb - host.reserved_disk_gb) * host.disk_allocation_ratio),
    )


def traits(host: Host) -> Traits:
    return Traits(host.cpu_model, host.machine_type, host.qemu_version)


def need_of(instance: Instance) -> Resources:
    return Resources(instance.vcpus, instance.ram_mb, instance.disk_gb)


class Placer:
    def __init__(self, scheduler: Scheduler, liveness: LivenessPolicy) -> None:
        self.scheduler = scheduler
        self.liveness = liveness

    async def candidates(self, session: AsyncSession) -> list[Candidate]:
        hosts = (await session.scalars(select(Host).order_by(Host.name))).all()
        used: dict[int, Resources] = {}
        members: dict[int, Counter[str]] = {}
        rows = await session.execute(
            select(Allocation, Instance.server_group).join(
                Instance, Allocation.instance_id == Instance.id
            )
        )
        for alloc, group in rows.all():
            need = Resources(alloc.vcpus, alloc.ram_mb, alloc.disk_gb)
            used[alloc.host_id] = used.get(alloc.host_id, Resources(0, 0, 0)) + need
            if group:
                members.setdefault(alloc.host_id, Counter())[group] += 1
        flows = await session.execute(
            select(Migration.dest_host_id, func.count())
            .where(Migration.state.in_([s.value for s in ACTIVE_MIGRATION_STATES]))
            .group_by(Migration.dest_host_id)
        )
        inbound: dict[int | None, int] = {dest: n for dest, n in flows.all()}
        return [
            Candidate(
                name=host.name,
                up=self.liveness.of(host) is Liveness.UP,
                enabled=host.admin_state == AdminState.ENABLED,
                in_service=host.maintenance_state == MaintenanceState.IN_SERVICE,
                capacity=capacity(host),
                used=used.get(host.id, Resources(0, 0, 0)),
                networks=frozenset(host.networks),
                traits=traits(host),
                inbound=inbound.get(host.id, 0),
                members=dict(members.get(host.id, {})),
            )
            for host in hosts
        ]

    async def group(
        self, session: AsyncSession, name: str | None, moving: str | None = None
    ) -> Group | None:
        """The server group `name` as a request sees it; `moving` (an instance id) does not
        count as an already placed member."""
        if name is None:
            return None
        row = await session.scalar(select(ServerGroup).where(ServerGroup.name == name))
        if row is None:
            return None
        others = select(Instance.id).where(
            Instance.server_group == name,
            Instance.host_id.is_not(None),
            Instance.state != InstanceState.DELETED.value,
        )
        if moving is not None:
            others = others.where(Instance.id != moving)
        placed = await session.scalar(others.limit(1)) is not None
        return Group(name, GroupPolicy(row.policy), placed)

    async def choose(
        self,
        session: AsyncSession,
        request: Request,
        *,
        only: str | None = None,
        exclude: str | None = None,
    ) -> Host:
        """The scheduler's host for `request` (or NoValidHost), as a database row."""
        hosts = [
            h
            for h in await self.candidates(session)
            if h.name != exclude and (only is None or h.name == only)
        ]
        try:
            chosen = self.scheduler.select(hosts, request)
        except NoValidHost as exc:
            log.info("placement of %s refused: %s", request.need, exc)
            raise
        host = await session.scalar(select(Host).where(Host.name == chosen.name))
        assert host is not None
        return host

    @staticmethod
    def claim(
        session: AsyncSession, host: Host, instance: Instance, migration_id: str | None = None
    ) -> Allocation:
        """Hold the instance's resources on `host`, in the caller's transaction."""
        allocation = Allocation(
            instance_id=instance.id,
            host_id=host.id,
            migration_id=migration_id,
            vcpus=instance.vcpus,
            ram_mb=instance.ram_mb,
            disk_gb=instance.disk_gb,
        )
        session.add(allocation)
        flag_modified(host, "name")  # bumps the version: a racing claim on this host fails
        return allocation

    async def plan(self, session: AsyncSession, host: Host) -> Plan:
        """Where every instance on `host` would go, planned jointly (nothing is changed)."""
        candidates = await self.candidates(session)
        source = next(c for c in candidates if c.name == host.name)
        rows = await session.scalars(
            select(Instance)
            .where(Instance.host_id == host.id, Instance.state != InstanceState.DELETED.value)
            .order_by(Instance.name)
        )
        groups = await session.execute(select(ServerGroup.name, ServerGroup.policy))
        policies = {name: policy for name, policy in groups.all()}
        movables = [
            Movable(
                i.id,
                i.name,
                need_of(i),
                frozenset(p.network for p in i.ports),
                i.server_group,
                GroupPolicy(policies[i.server_group]) if i.server_group in policies else None,
            )
            for i in rows.all()
        ]
        return plan_evacuation(self.scheduler, source, movables, candidates)


def no_valid_host(what: str, exc: NoValidHost) -> Conflict:
    return Conflict(f"{what}: {exc}")


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
