"""Drives instances towards their desired state on their hosts: building ones are started,
deleting ones are destroyed. Agent calls happen outside any transaction; each outcome is then
recorded in its own."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import raiseload

from ferry.agent_client import AgentClient, AgentUnavailable
from ferry.db.models import Host, Instance, Network
from ferry.db.types import utcnow
from ferry.domain.instance import InstanceState
from ferry.protocol import DiskIn, GuestSpecIn, ImageRef, PortIn
from ferry.services.images import GIB
from ferry.services.instances import InstanceService
from ferry.services.store import Store

log = logging.getLogger(__name__)

# A start that gets no answer (the agent fetching a large image, or restarting) is asked again
# each pass; after this long since the instance was created, the instance is in error.
BUILD_TIMEOUT = timedelta(minutes=15)


def root_disk(instance: Instance) -> DiskIn | None:
    """The instance's root disk: an overlay on its catalog image (loaded with the instance, see
    `Instance.image_ref`) of the size the instance claims: the flavor's disk, or where the
    flavor has none (0 GiB) the image's virtual size rounded up to whole GiB, the unit the
    scheduler counts (`services.instances.root_disk_gb`); None without an image."""
    image = instance.image_ref
    if image is None:
        return None
    ref = ImageRef(
        id=image.id,
        name=image.name,
        format=image.format,  # qcow2 | raw, checked at upload
        size_bytes=image.size_bytes,
        virtual_size_bytes=image.virtual_size_bytes,
        sha256=image.sha256,
    )
    size = instance.disk_gb * GIB if instance.disk_gb else image.virtual_size_bytes
    return DiskIn(image=ref, size_bytes=size)


def guest_spec(instance: Instance, networks: dict[str, Network] | None = None) -> GuestSpecIn:
    """What an agent needs to start (or receive) the instance. Ports carry the network's prefix
    length and gateway when `networks` is given; the lab's instance fabric is a /16. The disk
    (`root_disk`) is the same on both ends of a migration."""
    ports = []
    for port in instance.ports:
        network = (networks or {}).get(port.network)
        prefix = network.cidr.split("/")[1] if network else "16"
        ports.append(
            PortIn(
                network=port.network,
                mac=port.mac,
                ip=f"{port.ip}/{prefix}",
                gateway=network.gateway if network else None,
            )
        )
    return GuestSpecIn(
        id=instance.id,
        name=instance.name,
        vcpus=instance.vcpus,
        ram_mb=instance.ram_mb,
        ports=ports,
        dirty_rate_mbps=instance.dirty_rate_mbps,
        disk_write_kibps=instance.disk_write_kibps,
        disk=root_disk(instance),
    )


@dataclass(frozen=True)
class _Started:
    """What starting an instance on its host came to, waiting to be recorded."""

    instance_id: str
    host: str
    detail: str  # how it runs, or why it does not
    error: bool


class InstanceReconciler:
    """Within a pass, hosts are served in parallel, up to `parallel_hosts` at once, and each
    host's instances in turn: a cluster booting thousands of instances is not paced by one
    agent call at a time, and a slow agent does not hold up the other hosts of the pass."""

    def __init__(
        self,
        store: Store,
        instances: InstanceService,
        agents: AgentClient,
        parallel_hosts: int = 16,
    ) -> None:
        self.store = store
        self.instances = instances
        self.agents = agents
        self.parallel_hosts = parallel_hosts
        self._started: list[_Started] = []

    async def step(self) -> None:
        async with self.store.reading() as session:
            rows = (
                await session.execute(
                    select(Instance, Host)
                    .join(Host, Instance.host_id == Host.id)
                    .where(
                        Instance.state.in_(
                            [InstanceState.BUILDING.value, InstanceState.DELETING.value]
                        )
                    )
                )
            ).all()
            networks = {n.name: n for n in (await session.scalars(select(Network))).all()}
            work = [(i, h, guest_spec(i, networks)) for i, h in rows]
        by_host: dict[int, list[tuple[Instance, Host, GuestSpecIn]]] = {}
        for item in work:
            by_host.setdefault(item[1].id, []).append(item)
        gate = asyncio.Semaphore(self.parallel_hosts)
        outcomes = await asyncio.gather(
            *(self._on_host(items, gate) for items in by_host.values()), return_exceptions=True
        )
        await self._forget_unplaced()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # the loop logs it and tries again next pass

    async def _on_host(
        self, items: list[tuple[Instance, Host, GuestSpecIn]], gate: asyncio.Semaphore
    ) -> None:
        """One host's instances, one after the other (as its agent would take them anyway)."""
        async with gate:
            for instance, host, spec in items:
                if instance.state == InstanceState.BUILDING:
                    await self._start(instance, host, spec)
                else:
                    await self._destroy(instance, host)

    async def _start(self, instance: Instance, host: Host, spec: GuestSpecIn) -> None:
        if not host.agent_url:
            return  # a host without an agent API (simulated): nothing can start it
        try:
            guest = await self.agents.spawn(host.agent_url, spec)
        except AgentUnavailable as exc:
            if not exc.refused and utcnow() - instance.created_at < BUILD_TIMEOUT:
                # No answer: the agent may be fetching the image still, or restarting. A start
                # is idempotent, so the next pass asks again (and waits on the same download).
                log.info("start of %s not answered yet: %s", instance.name, exc)
                return
            outcome = _Started(instance.id, host.name, str(exc), error=True)
        else:
            how = f"QEMU pid {guest.pid}" if guest.pid else guest.power
            outcome = _Started(instance.id, host.name, how, error=False)
        self._started.append(outcome)
        await self._record_started()

    async def _record_started(self) -> None:
        """Record every start outcome waiting, in one transaction: whichever start gets the write
        first records those of the starts that finished meanwhile too (the later ones find
        nothing left), so a thousand instances booting do not take the serialized write once
        each. Should the transaction fail, its instances are still building: the next pass
        starts them again (a start of a running guest returns it as it is)."""
        async with self.store.write() as session:
            batch, self._started = self._started, []
            if not batch:
                return
            rows = await session.scalars(
                select(Instance)
                .where(Instance.id.in_([o.instance_id for o in batch]))
                .options(raiseload(Instance.ports))
            )
            current = {i.id: i for i in rows.all()}
            for outcome in batch:
                instance = current.get(outcome.instance_id)
                if instance is None or instance.state != InstanceState.BUILDING:
                    continue
                if outcome.error:
                    self.instances.mark_error(session, instance, outcome.host, outcome.detail)
                else:
                    self.instances.mark_running(session, instance, outcome.host, outcome.detail)

    async def _destroy(self, instance: Instance, host: Host) -> None:
        if host.agent_url:
            try:
                await self.agents.destroy(host.agent_url, instance.id)
            except AgentUnavailable as exc:
                log.warning("cannot delete %s on %s yet: %s", instance.name, host.name, exc)
                return
        async with self.store.write() as session:
            current = await session.get(Instance, instance.id)
            if current is not None and current.state == InstanceState.DELETING:
                await self.instances.forget(session, current, host.name)

    async def _forget_unplaced(self) -> None:
        async with self.store.reading() as session:
            orphans = (
                await session.scalars(
                    select(Instance.id).where(
                        Instance.state == InstanceState.DELETING.value, Instance.host_id.is_(None)
                    )
                )
            ).all()
        if not orphans:
            return
        async with self.store.write() as session:
            for instance_id in orphans:
                current = await session.get(Instance, instance_id)
                if current is not None and current.state == InstanceState.DELETING:
                    await self.instances.forget(session, current, None)
