"""Instances: create (placed by the scheduler, resources claimed in the same transaction), delete,
list, and the agents' reports of what really runs."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import raiseload

from ferry.db.models import Allocation, Flavor, Host, Image, Instance, Migration, Port
from ferry.domain.errors import Conflict, InvalidInput, NotFound
from ferry.domain.events import EventKind
from ferry.domain.instance import INSTANCE, InstanceAction, InstanceState
from ferry.domain.migration import ACTIVE_MIGRATION_STATES
from ferry.protocol import GuestReport
from ferry.scheduler.framework import NoValidHost
from ferry.scheduler.model import Request, Resources
from ferry.services import placement
from ferry.services.catalog import _name, get_flavor, get_network
from ferry.services.hosts import get_host
from ferry.services.images import GIB, get_image, size_text
from ferry.services.store import Store, record

MIB = 1 << 20


@dataclass(frozen=True)
class InstanceRequest:
    name: str
    flavor: str
    network: str
    host: str | None = None
    dirty_rate_mbps: int = 0
    group: str | None = None
    image: str | None = None  # of the catalog: the root disk's image
    disk_write_kibps: int = 0  # disk-writing workload inside the guest (the lab image)


async def get_instance(session: AsyncSession, name_or_id: str) -> Instance:
    instance = await session.scalar(
        select(Instance).where(
            (Instance.name == name_or_id) | (Instance.id == name_or_id),
            Instance.state != InstanceState.DELETED.value,
        )
    )
    if instance is None:
        raise NotFound(f"no instance named {name_or_id!r}")
    return instance


def _transition(instance: Instance, action: InstanceAction) -> None:
    state = INSTANCE.apply(InstanceState(instance.state), action, name=instance.name)
    instance.state = state.value


class InstanceService:
    def __init__(self, store: Store, placer: placement.Placer) -> None:
        self.store = store
        self.placer = placer
        # Per host, the running instances its latest report lacked (see apply_report).
        self._unseen: dict[str, set[str]] = {}

    async def create(self, req: InstanceRequest, actor: str) -> tuple[Instance, str]:
        """The new instance (building) and the name of the host it is placed on."""
        _name("instance", req.name)
        async with self.store.write() as session:
            if await session.scalar(
                select(Instance.id).where(
                    Instance.name == req.name, Instance.state != InstanceState.DELETED.value
                )
            ):
                raise Conflict(f"an instance named {req.name!r} exists already")
            flavor = await get_flavor(session, req.flavor)
            network = await get_network(session, req.network)
            image = await get_image(session, req.image) if req.image is not None else None
            disk_gb = root_disk_gb(flavor, image)
            group = await self.placer.group(session, req.group)
            if req.group is not None and group is None:
                raise NotFound(f"no server group named {req.group!r}")
            need = Resources(flavor.vcpus, flavor.ram_mb, disk_gb)
            host = await self._place(
                session, Request(need, frozenset({network.name}), group), req.host
            )
            instance = Instance(
                name=req.name,
                vcpus=flavor.vcpus,
                ram_mb=flavor.ram_mb,
                disk_gb=disk_gb,
                flavor=flavor.name,
                image=image.name if image is not None else "ferry-guest",
                image_id=image.id if image is not None else None,
                image_ref=image,  # known: the view and the guest spec read it without a query
                host_id=host.id,
                created_by=actor,
                dirty_rate_mbps=req.dirty_rate_mbps,
                disk_write_kibps=req.disk_write_kibps,
                storage_pool=host.storage_pool if image and host.storage_kind == "shared" else None,
                server_group=req.group,
                ports=[],  # known empty: the port below is added without loading the collection
            )
            session.add(instance)
            await session.flush()
            prefix = network.cidr.split("/")[1]
            ip = await placement.free_ip(session, network)
            mac = await placement.free_mac(session)
            instance.ports.append(Port(network=network.name, mac=mac, ip=ip))
            self.placer.claim(session, host, instance)
            record(
                session,
                EventKind.INSTANCE_CREATED,
                actor,
                f"instance {req.name} placed on {host.name} with {ip}/{prefix}",
                host=host.name,
                instance_id=instance.id,
                data={"flavor": flavor.name, "network": network.name, "ip": ip}
                | ({"group": req.group} if req.group else {})
                | ({"image": image.name} if image is not None else {}),
            )
        # Every column has a default set in Python and the ports were built here: the committed
        # instance is returned as it is, without reading back what this transaction wrote.
        return instance, host.name

    async def _place(self, session: AsyncSession, request: Request, wanted: str | None) -> Host:
        # The named host's row stays referenced, so the session still holds it when `choose`
        # looks the chosen host up by its key: no second read.
        named = await get_host(session, wanted) if wanted is not None else None
        try:
            host = await self.placer.choose(session, request, only=wanted)
        except NoValidHost as exc:
            target = f"host {wanted}" if wanted else "any host"
            raise Conflict(f"cannot place the instance on {target}: {exc}") from exc
        assert named is None or host is named
        return host

    async def delete(self, name: str, actor: str) -> Instance:
        async with self.store.write() as session:
            instance = await get_instance(session, name)
            if await session.scalar(
                select(Migration.id).where(
                    Migration.instance_id == instance.id,
                    Migration.state.in_([s.value for s in ACTIVE_MIGRATION_STATES]),
                )
            ):
                raise Conflict(f"instance {instance.name} is migrating; abort the migration first")
            _transition(instance, InstanceAction.DELETE)
            host = await session.get(Host, instance.host_id) if instance.host_id else None
            record(
                session,
                EventKind.INSTANCE_DELETING,
                actor,
                f"instance {instance.name} is being deleted",
                host=host.name if host else None,
                instance_id=instance.id,
            )
        return instance

    async def all(self, host: str | None = None) -> list[tuple[Instance, str | None]]:
        query = (
            select(Instance, Host.name)
            .outerjoin(Host, Instance.host_id == Host.id)
            .where(Instance.state != InstanceState.DELETED.value)
            .order_by(Instance.name)
        )
        if host is not None:
            query = query.where(Host.name == host)
        async with self.store.reading() as session:
            return [(i, h) for i, h in (await session.execute(query)).all()]

    async def get(self, name: str) -> Instance:
        async with self.store.reading() as session:
            return await get_instance(session, name)

    async def host_name(self, instance: Instance) -> str | None:
        async with self.store.reading() as session:
            host = await session.get(Host, instance.host_id) if instance.host_id else None
            return host.name if host else None

    async def apply_report(self, host_name: str, guests: list[GuestReport]) -> None:
        """What the agent says runs on its host settles building instances and notices crashes.
        An instance in flight is left to the migration reconciler, which asks both ends: its
        source may rightly have let it go before the record moves it.

        A report can be older than the instance's state: the agent lists its guests, then the
        controller starts one there and marks it running, then the report arrives. So a running
        instance missing from a report is declared lost only when the host's next report lacks
        it too: an agent lists its guests for a heartbeat only after the controller answered
        the previous one, so that next list is newer than the state the first one was held
        against. A guest reported stopped or crashed is an error at once."""
        async with self.store.write() as session:
            await self.settle(session, await get_host(session, host_name), guests)

    async def settle(self, session: AsyncSession, host: Host, guests: list[GuestReport]) -> bool:
        """`apply_report` in the caller's transaction (a heartbeat's); True when it changed an
        instance."""
        by_id = {g.id: g for g in guests}
        moving = select(Migration.instance_id).where(
            Migration.state.in_([s.value for s in ACTIVE_MIGRATION_STATES])
        )
        rows = await session.scalars(
            select(Instance)
            .where(
                Instance.host_id == host.id,
                Instance.state.in_([InstanceState.BUILDING.value, InstanceState.RUNNING.value]),
                Instance.id.not_in(moving),
            )
            .options(raiseload(Instance.ports))  # not needed here: no query for them per beat
        )
        unseen = self._unseen.pop(host.name, set())
        missing: set[str] = set()
        changed = False
        for instance in rows.all():
            guest = by_id.get(instance.id)
            if guest is not None:
                _note_disk(instance, guest.disk_bytes)
            if instance.state == InstanceState.BUILDING:
                if guest is not None and guest.power == "running":
                    self.mark_running(session, instance, host.name, "reported by the agent")
                    changed = True
            elif guest is not None and guest.power in ("stopped", "crashed"):
                self.mark_error(session, instance, host.name, guest.detail)
                changed = True
            elif guest is None and instance.id in unseen:
                self.mark_error(session, instance, host.name, "the host does not run it")
                changed = True
            elif guest is None:
                missing.add(instance.id)
        if missing:
            self._unseen[host.name] = missing
        return changed

    @staticmethod
    def mark_running(session: AsyncSession, instance: Instance, host: str, how: str) -> None:
        _transition(instance, InstanceAction.BOOTED)
        instance.error = None
        record(
            session,
            EventKind.INSTANCE_RUNNING,
            "system",
            f"instance {instance.name} runs on {host} ({how})",
            host=host,
            instance_id=instance.id,
        )

    @staticmethod
    def mark_error(session: AsyncSession, instance: Instance, host: str, why: str) -> None:
        _transition(instance, InstanceAction.FAIL)
        instance.error = why
        record(
            session,
            EventKind.INSTANCE_ERROR,
            "system",
            f"instance {instance.name} failed on {host}: {why}",
            host=host,
            instance_id=instance.id,
            data={"error": why},
        )

    @staticmethod
    async def forget(session: AsyncSession, instance: Instance, host: str | None) -> None:
        """The instance is gone from its host: release its claim and addresses."""
        _transition(instance, InstanceAction.DELETED)
        instance.host_id = None
        await session.execute(delete(Allocation).where(Allocation.instance_id == instance.id))
        await session.execute(delete(Port).where(Port.instance_id == instance.id))
        record(
            session,
            EventKind.INSTANCE_DELETED,
            "system",
            f"instance {instance.name} deleted",
            host=host,
            instance_id=instance.id,
        )


def root_disk_gb(flavor: Flavor, image: Image | None) -> int:
    """The GiB an instance claims: its flavor's disk, or, where the flavor says 0, its image's
    virtual size (rounded up); a flavor disk smaller than the image is refused."""
    if image is None:
        return flavor.disk_gb
    if 0 < flavor.disk_gb * GIB < image.virtual_size_bytes:
        raise InvalidInput(
            f"flavor {flavor.name}'s disk ({flavor.disk_gb} GiB) is smaller than image"
            f" {image.name} ({size_text(image.virtual_size_bytes)} virtual)"
        )
    return flavor.disk_gb or -(-image.virtual_size_bytes // GIB)


def validate_dirty_rate(rate: int) -> int:
    if not 0 <= rate <= 10_000:
        raise InvalidInput("dirty rate must be 0-10000 MiB/s")
    return rate


def _note_disk(instance: Instance, allocated: int | None) -> None:
    """Keep what moving the instance's local disk copies, as its host last reported it, to the
    MiB: shown, and the drain's order and estimate; it wakes nobody, and a disk written
    steadily does not cost a write per beat for every byte."""
    if allocated is None:
        return
    rounded = allocated // MIB * MIB
    if instance.disk_bytes != rounded:
        instance.disk_bytes = rounded
