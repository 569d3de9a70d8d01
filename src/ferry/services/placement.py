"""Placement against the database: hosts as scheduler candidates, server groups, claims, the
evacuation plan of a host, and addresses for new ports.

A claim is the decision and its allocation in one transaction. On SQLite the controller's writes
are serialized; on a database several processes share, the claim also bumps the chosen host's
version, so of two racing decisions for one host only one commits (the other retries)."""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from sqlalchemy import String, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from ferry.db.models import Allocation, Host, Instance, Migration, Network, Port, ServerGroup
from ferry.domain.errors import Conflict
from ferry.domain.host import AdminState, MaintenanceState
from ferry.domain.instance import InstanceState
from ferry.domain.migration import ACTIVE_MIGRATION_STATES
from ferry.scheduler.framework import NoValidHost, Scheduler
from ferry.scheduler.model import Candidate, Group, GroupPolicy, Request, Resources, Traits
from ferry.scheduler.planner import Movable, Plan, plan_evacuation
from ferry.services.hosts import LivenessPolicy

log = logging.getLogger(__name__)


class HostSizing(Protocol):
    """What capacity and traits read of a host: a Host row, or a row of `_CANDIDATE_COLUMNS`."""

    @property
    def vcpus(self) -> int: ...
    @property
    def ram_mb(self) -> int: ...
    @property
    def disk_gb(self) -> int: ...
    @property
    def reserved_vcpus(self) -> int: ...
    @property
    def reserved_ram_mb(self) -> int: ...
    @property
    def reserved_disk_gb(self) -> int: ...
    @property
    def cpu_allocation_ratio(self) -> float: ...
    @property
    def ram_allocation_ratio(self) -> float: ...
    @property
    def disk_allocation_ratio(self) -> float: ...
    @property
    def cpu_model(self) -> str: ...
    @property
    def machine_type(self) -> str: ...
    @property
    def qemu_version(self) -> str: ...
    @property
    def accelerator(self) -> str: ...


def capacity(host: HostSizing) -> Resources:
    return Resources(
        int((host.vcpus - host.reserved_vcpus) * host.cpu_allocation_ratio),
        int((host.ram_mb - host.reserved_ram_mb) * host.ram_allocation_ratio),
        int((host.disk_gb - host.reserved_disk_gb) * host.disk_allocation_ratio),
    )


def traits(host: HostSizing) -> Traits:
    return Traits(host.cpu_model, host.machine_type, host.qemu_version, host.accelerator)


# What `candidates` reads of each host, by name. The networks come as their JSON text: most hosts
# share one list, so parsing is memoized per distinct text.
_CANDIDATE_COLUMNS = (
    Host.id,
    Host.name,
    Host.vcpus,
    Host.ram_mb,
    Host.disk_gb,
    Host.reserved_vcpus,
    Host.reserved_ram_mb,
    Host.reserved_disk_gb,
    Host.cpu_allocation_ratio,
    Host.ram_allocation_ratio,
    Host.disk_allocation_ratio,
    Host.cpu_model,
    Host.machine_type,
    Host.qemu_version,
    Host.accelerator,
    Host.storage_kind,
    Host.storage_pool,
    cast(Host.networks, String).label("networks"),
    Host.last_heartbeat_at,
    Host.liveness_seen,
    Host.admin_state,
    Host.maintenance_state,
)


@functools.lru_cache(maxsize=256)
def _network_set(text: str) -> frozenset[str]:
    return frozenset(json.loads(text))


def need_of(instance: Instance) -> Resources:
    """What a move of `instance` needs at its destination: a disk in a shared pool is there
    already (the pool's space is counted once, see `_pool_disks`)."""
    disk = 0 if instance.storage_pool else instance.disk_gb
    return Resources(instance.vcpus, instance.ram_mb, disk)


def disk_pool_of(instance: Instance) -> str | None:
    """Where a moving instance's disk is, as `Request.disk_pool` says it."""
    if instance.image_id is None:
        return None
    return instance.storage_pool or ""


def bytes_to_move(instance: Instance) -> tuple[int, int]:
    """What a live move of the instance sends: its RAM, and its local disk's allocated bytes as
    its host last reported them (0 on shared storage, where the disk stays; 0 until a first
    report). The drain orders its moves by their sum, and a drain's physical bound is the sum
    over its instances divided by the source's link: RAM and disk streams share that link."""
    ram = instance.ram_mb << 20
    return ram, (instance.disk_bytes or 0) if on_local_disk(instance) else 0


def on_local_disk(instance: Instance) -> bool:
    """Its disk is on its host's own storage: it leaves the host only with a live copy."""
    return instance.image_id is not None and not instance.storage_pool


class Placer:
    def __init__(self, scheduler: Scheduler, liveness: LivenessPolicy) -> None:
        self.scheduler = scheduler
        self.liveness = liveness

    async def candidates(
        self, session: AsyncSession, *, only: str | None = None
    ) -> list[Candidate]:
        """Every host (or only the one named) as the scheduler sees it. What allocations claim
        and which group members they hold are summed by the database, one row per host (and
        group), so the cost follows the number of hosts, not of instances. Hosts are read as
        plain column tuples, not ORM rows: a placement reads every host, and hydrating them
        cost more than the decision."""
        return list((await self._candidates(session, only=only)).values())

    async def _candidates(
        self, session: AsyncSession, *, only: str | None = None, members: bool = True
    ) -> dict[int, Candidate]:
        """The candidates by host id. One named host is read in a single statement, its claims
        and inbound migrations summed by subqueries. Without `members` the server groups'
        members are not counted (they matter only to a request for a group)."""
        active = [s.value for s in ACTIVE_MIGRATION_STATES]
        if only is not None:
            sums = [
                select(func.coalesce(func.sum(column), 0))
                .where(Allocation.host_id == Host.id)
                .scalar_subquery()
                .label(f"used_{column.key}")
                for column in (Allocation.vcpus, Allocation.ram_mb, Allocation.disk_gb)
            ]
            flowing = (
                select(func.count())
                .where(Migration.dest_host_id == Host.id, Migration.state.in_(active))
                .scalar_subquery()
                .label("inbound")
            )
            query = select(*_CANDIDATE_COLUMNS, *sums, flowing).where(Host.name == only)
            hosts: Sequence[Any] = (await session.execute(query)).all()
            used = {
                row.id: Resources(int(row.used_vcpus), int(row.used_ram_mb), int(row.used_disk_gb))
                for row in hosts
            }
            inbound: dict[int | None, int] = {row.id: int(row.inbound) for row in hosts}
            ids: list[int] | None = list(used)
        else:
            query = select(*_CANDIDATE_COLUMNS).order_by(Host.name)
            hosts = list((await session.execute(query)).all())
            ids = None
            used = await claimed(session, ids)
            flows = select(Migration.dest_host_id, func.count()).where(Migration.state.in_(active))
            counted = await session.execute(flows.group_by(Migration.dest_host_id))
            inbound = {dest: n for dest, n in counted.all()}
        groups = await group_members(session, ids) if members and hosts else {}
        heard = self.liveness.heard_since()
        nothing = Resources(0, 0, 0)
        candidates: dict[int, Candidate] = {}
        for row in hosts:
            candidates[row.id] = Candidate(
                name=row.name,
                up=heard(row.last_heartbeat_at, row.liveness_seen),
                enabled=row.admin_state == AdminState.ENABLED,
                in_service=row.maintenance_state == MaintenanceState.IN_SERVICE,
                capacity=capacity(row),
                used=used.get(row.id, nothing),
                networks=_network_set(row.networks),
                traits=traits(row),
                inbound=inbound.get(row.id, 0),
                members=groups.get(row.id, {}),
                storage_pool=row.storage_pool if row.storage_kind == "shared" else "",
            )
        if any(c.storage_pool for c in candidates.values()):
            await _pool_disks(session, candidates)
        return candidates

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
        found = await self._candidates(session, only=only, members=request.group is not None)
        ids = {c.name: host_id for host_id, c in found.items()}
        hosts = [c for c in found.values() if c.name != exclude]
        try:
            chosen = self.scheduler.select(hosts, request)
        except NoValidHost as exc:
            log.info("placement of %s refused: %s", request.need, exc)
            raise
        # By primary key: a row this session holds already (the host a request names) is not
        # read again.
        host = await session.get(Host, ids[chosen.name])
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
                disk_pool_of(i),
            )
            for i in rows.all()
        ]
        return plan_evacuation(self.scheduler, source, movables, candidates)


async def _pool_disks(session: AsyncSession, candidates: dict[int, Candidate]) -> None:
    """Hosts of a shared pool share its space: each gets the pool's disk capacity (the largest
    any of them reports) and the disks of every live instance in the pool as used, however the
    instances are spread over the pool's hosts."""
    rows = await session.execute(
        select(Instance.storage_pool, func.sum(Instance.disk_gb))
        .where(Instance.storage_pool.is_not(None), Instance.state != InstanceState.DELETED.value)
        .group_by(Instance.storage_pool)
    )
    used = {pool: int(total or 0) for pool, total in rows.all()}
    size: dict[str, int] = {}
    for c in candidates.values():
        if c.storage_pool:
            size[c.storage_pool] = max(size.get(c.storage_pool, 0), c.capacity.disk_gb)
    for host_id, c in candidates.items():
        if c.storage_pool:
            candidates[host_id] = replace(
                c,
                capacity=replace(c.capacity, disk_gb=size[c.storage_pool]),
                used=replace(c.used, disk_gb=used.get(c.storage_pool, 0)),
            )


async def claimed(session: AsyncSession, host_ids: list[int] | None) -> dict[int, Resources]:
    """What allocations claim per host (of `host_ids`, or of all hosts for None)."""
    query = select(
        Allocation.host_id,
        func.sum(Allocation.vcpus),
        func.sum(Allocation.ram_mb),
        func.sum(Allocation.disk_gb),
    )
    if host_ids is not None:
        query = query.where(Allocation.host_id.in_(host_ids))
    rows = await session.execute(query.group_by(Allocation.host_id))
    return {
        host_id: Resources(int(vcpus or 0), int(ram or 0), int(disk or 0))
        for host_id, vcpus, ram, disk in rows.all()
    }


async def group_members(
    session: AsyncSession, host_ids: list[int] | None
) -> dict[int, dict[str, int]]:
    """Per host, how many allocations each server group holds there (in flight ones too)."""
    query = (
        select(Allocation.host_id, Instance.server_group, func.count())
        .join(Instance, Allocation.instance_id == Instance.id)
        .where(Instance.server_group.is_not(None))
    )
    if host_ids is not None:
        query = query.where(Allocation.host_id.in_(host_ids))
    rows = await session.execute(query.group_by(Allocation.host_id, Instance.server_group))
    members: dict[int, dict[str, int]] = {}
    for host_id, group, count in rows.all():
        if group is not None:
            members.setdefault(host_id, {})[group] = count
    return members


def no_valid_host(what: str, exc: NoValidHost) -> Conflict:
    return Conflict(f"{what}: {exc}")


async def free_ip(session: AsyncSession, network: Network) -> str:
    """The lowest free host address of the network's allocation range (the gateway is never
    handed out, nor anything outside the range)."""
    net = ipaddress.IPv4Network(network.cidr)
    # Plain column values (not ORM-loaded): a network can hold thousands of ports.
    connection = await session.connection()
    rows = await connection.execute(select(Port.ip).where(Port.network == network.name))
    taken = set(rows.scalars())
    taken.add(network.gateway or "")
    start = ipaddress.IPv4Address(network.allocation_start or net.network_address + 1)
    end = ipaddress.IPv4Address(network.allocation_end or net.broadcast_address - 1)
    for address in ipaddress.summarize_address_range(start, end):
        for candidate in address:
            if str(candidate) not in taken:
                return str(candidate)
    raise Conflict(f"network {network.name} ({network.cidr}) has no free address")


async def free_mac(session: AsyncSession) -> str:
    """A locally administered unicast MAC in QEMU's customary 52:54:00 range, unused so far."""
    while True:  # one indexed lookup per try: 16 million MACs, so a try rarely fails
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        if await session.scalar(select(Port.id).where(Port.mac == mac).limit(1)) is None:
            return mac
