"""Hosts: registration and heartbeats from agents, listing, and administrative enable/disable."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, and_, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Allocation, Host, Instance
from ferry.db.types import utcnow
from ferry.domain import validation
from ferry.domain.errors import NotFound
from ferry.domain.events import SYSTEM_ACTOR, EventKind
from ferry.domain.host import (
    ADMIN,
    AdminAction,
    AdminState,
    Liveness,
    MaintenanceState,
    heartbeat_deadline,
    liveness,
)
from ferry.domain.instance import InstanceState
from ferry.protocol import HostRegistration, StorageReport
from ferry.scheduler.model import NOTHING, Resources
from ferry.services.store import Store, record

# Applies what a heartbeat reports, in the heartbeat's transaction; True when it changed state.
Report = Callable[[AsyncSession, Host], Awaitable[bool]]


@dataclass(frozen=True)
class LivenessPolicy:
    """A host is down once `misses` heartbeat intervals passed without one, as heard by this
    controller: heartbeats sent while it was not running (a restart, a crash) were never
    missed by the host. So a host that was up when the controller went away counts its silence
    from `watching_since` (when this controller started listening), not from its last heartbeat
    on record; a host already known to be down stays down until it is heard."""

    interval: timedelta
    misses: int = 3
    watching_since: datetime = field(default_factory=utcnow)

    def of(self, host: Host, now: datetime | None = None) -> Liveness:
        last = self._effective(host.last_heartbeat_at, host.liveness_seen)
        return liveness(last, now or utcnow(), self.interval, self.misses)

    def heard_since(self, now: datetime | None = None) -> Callable[[datetime | None, str], bool]:
        """`of(host) is UP` from a host's last heartbeat and announced liveness, with the
        deadline computed once: for judging many hosts at the same instant."""
        deadline = self.deadline(now)

        def up(last_heartbeat: datetime | None, liveness_seen: str) -> bool:
            last = self._effective(last_heartbeat, liveness_seen)
            return last is not None and last > deadline

        return up

    def _effective(self, last: datetime | None, liveness_seen: str) -> datetime | None:
        """The heartbeat silence counts from: see the class docstring."""
        if last is not None and liveness_seen == Liveness.UP.value:
            return max(last, self.watching_since)
        return last

    def deadline(self, now: datetime | None = None) -> datetime:
        return heartbeat_deadline(now or utcnow(), self.interval, self.misses)

    def listening_long_enough(self, now: datetime | None = None) -> bool:
        """Whether this controller has listened for a whole window: before that, a host that
        was up is not down whatever its last heartbeat on record."""
        return self.watching_since < self.deadline(now)

    def up(self) -> ColumnElement[bool]:
        """`of(host) is UP`, as an SQL condition."""
        heard = Host.last_heartbeat_at >= self.deadline()
        if self.listening_long_enough():
            return heard
        return or_(
            heard,
            and_(Host.last_heartbeat_at.is_not(None), Host.liveness_seen == Liveness.UP.value),
        )


@dataclass(frozen=True)
class HostFilter:
    admin_state: AdminState | None = None
    maintenance: tuple[MaintenanceState, ...] = ()
    liveness: Liveness | None = None


async def get_host(session: AsyncSession, name: str) -> Host:
    host = await session.scalar(select(Host).where(Host.name == name))
    if host is None:
        raise NotFound(f"no host named {name!r}")
    return host


@dataclass(frozen=True)
class HostLoad:
    """What a host holds: its live instances, and the resources allocations claim on it
    (its instances', and those of migrations in flight towards it)."""

    instances: int = 0
    used: Resources = NOTHING


async def instance_counts(session: AsyncSession, host_ids: list[int]) -> dict[int, int]:
    """Live (not deleted) instances per host."""
    if not host_ids:
        return {}
    rows = await session.execute(
        select(Instance.host_id, func.count())
        .where(Instance.host_id.in_(host_ids), Instance.state != InstanceState.DELETED.value)
        .group_by(Instance.host_id)
    )
    return {host_id: count for host_id, count in rows.all() if host_id is not None}


async def host_loads(session: AsyncSession, host_ids: list[int]) -> dict[int, HostLoad]:
    """Instances and claimed resources per host; hosts holding nothing are left out."""
    if not host_ids:
        return {}
    counts = await instance_counts(session, host_ids)
    rows = await session.execute(
        select(
            Allocation.host_id,
            func.sum(Allocation.vcpus),
            func.sum(Allocation.ram_mb),
            func.sum(Allocation.disk_gb),
        )
        .where(Allocation.host_id.in_(host_ids))
        .group_by(Allocation.host_id)
    )
    used = {
        host_id: Resources(int(vcpus or 0), int(ram or 0), int(disk or 0))
        for host_id, vcpus, ram, disk in rows.all()
    }
    return {
        host_id: HostLoad(counts.get(host_id, 0), used.get(host_id, NOTHING))
        for host_id in counts.keys() | used.keys()
    }


def storage_columns(storage: StorageReport | None) -> dict[str, str | int]:
    if storage is None:
        return {"storage_kind": "local", "storage_pool": "", "storage_free_gb": 0}
    return {
        "storage_kind": storage.kind,
        "storage_pool": storage.pool,
        "storage_free_gb": storage.free_gb,
    }


def _apply_registration(host: Host, reg: HostRegistration) -> list[str]:
    """Copy what the agent reports onto the host; return the names of fields that changed."""
    values = {
        "management_address": reg.management_address,
        "migration_address": reg.migration_address,
        **reg.inventory.model_dump(),
        **reg.capabilities.model_dump(),
        "agent_version": reg.agent_version,
        "agent_url": reg.agent_url,
        **storage_columns(reg.storage),
    }
    changed = [key for key, value in values.items() if getattr(host, key, None) != value]
    for key in changed:
        setattr(host, key, values[key])
    return changed


class HostService:
    def __init__(self, store: Store, policy: LivenessPolicy) -> None:
        self.store = store
        self.policy = policy

    async def register(self, reg: HostRegistration, actor: str) -> tuple[Host, bool]:
        """Create or refresh a host. Admin and maintenance state are the operator's and survive
        any number of re-registrations (reboots, agent restarts)."""
        async with self.store.write() as session:
            host = await session.scalar(select(Host).where(Host.name == reg.name))
            created = host is None
            if host is None:
                host = Host(name=reg.name)
                session.add(host)
            changed = _apply_registration(host, reg)
            self._beat(session, host, actor)
            if created:
                record(
                    session,
                    EventKind.HOST_REGISTERED,
                    actor,
                    f"host {reg.name} registered",
                    host=reg.name,
                    data={"inventory": reg.inventory.model_dump()},
                )
            elif changed:
                record(
                    session,
                    EventKind.HOST_UPDATED,
                    actor,
                    f"host {reg.name} re-registered; changed: {', '.join(changed)}",
                    host=reg.name,
                    data={"changed": changed},
                )
        return host, created

    async def heartbeat(
        self,
        name: str,
        actor: str,
        report: Report | None = None,
        storage_free_gb: int | None = None,
    ) -> Host:
        """Move the host's heartbeat time. That alone wakes no loop and no event stream (nothing
        acts on the time itself: liveness is judged against it at each read), so a thousand
        hosts beating do not make every reconcile loop run a pass per beat; a host that comes
        back up is announced and wakes them. `report` (the guests the beat carries, applied in
        the same transaction: one write per beat) says whether it changed anything, which wakes
        them too."""
        async with self.store.db.writing() as session:
            host = await get_host(session, name)
            back = self._beat(session, host, actor)
            if storage_free_gb is not None and host.storage_free_gb != storage_free_gb:
                host.storage_free_gb = storage_free_gb  # shown, not acted on: wakes nobody
            changed = await report(session, host) if report is not None else False
        if back or changed:
            self.store.bus.notify()
        return host

    def _beat(self, session: AsyncSession, host: Host, actor: str) -> bool:
        """Record the beat; True when the host was down and is announced up again."""
        now = utcnow()
        was_down = host.last_heartbeat_at is not None and host.liveness_seen == Liveness.DOWN
        host.last_heartbeat_at = now
        if was_down:
            host.liveness_seen = Liveness.UP.value
            record(
                session, EventKind.HOST_UP, actor, f"host {host.name} is up again", host=host.name
            )
        return was_down

    async def mark_down_silent_hosts(self) -> list[str]:
        """Announce, once, every host whose heartbeats stopped. Returns their names."""
        if not self.policy.listening_long_enough():
            return []  # just (re)started: no host had the time to miss a heartbeat to us
        async with self.store.write() as session:
            hosts = (
                await session.scalars(
                    select(Host).where(
                        Host.liveness_seen == Liveness.UP.value,
                        or_(
                            Host.last_heartbeat_at.is_(None),
                            Host.last_heartbeat_at < self.policy.deadline(),
                        ),
                    )
                )
            ).all()
            for host in hosts:
                host.liveness_seen = Liveness.DOWN.value
                record(
                    session,
                    EventKind.HOST_DOWN,
                    SYSTEM_ACTOR,
                    f"host {host.name} is down: no heartbeat for {self.policy.misses}"
                    f" intervals of {self.policy.interval.total_seconds():g}s",
                    host=host.name,
                    data={"last_heartbeat_at": _iso(host.last_heartbeat_at)},
                )
        return [host.name for host in hosts]

    def _filtered(self, flt: HostFilter) -> Select[Host]:
        query = select(Host).order_by(Host.name)
        if flt.admin_state is not None:
            query = query.where(Host.admin_state == flt.admin_state.value)
        if flt.maintenance:
            query = query.where(Host.maintenance_state.in_([m.value for m in flt.maintenance]))
        if flt.liveness is Liveness.UP:
            query = query.where(self.policy.up())
        elif flt.liveness is Liveness.DOWN:
            query = query.where(or_(Host.last_heartbeat_at.is_(None), not_(self.policy.up())))
        return query

    async def list(self, flt: HostFilter) -> tuple[list[Host], dict[int, HostLoad]]:
        async with self.store.reading() as session:
            hosts = list((await session.scalars(self._filtered(flt))).all())
            loads = await host_loads(session, [h.id for h in hosts])
        return hosts, loads

    async def require(self, name: str) -> Host:
        """The host named `name` (NotFound otherwise), without its load."""
        async with self.store.reading() as session:
            return await get_host(session, name)

    async def get(self, name: str) -> tuple[Host, HostLoad]:
        async with self.store.reading() as session:
            host = await get_host(session, name)
            loads = await host_loads(session, [host.id])
        return host, loads.get(host.id, HostLoad())

    async def disable(self, name: str, reason: str, actor: str) -> Host:
        reason = validation.reason(reason)
        async with self.store.write() as session:
            host = await get_host(session, name)
            state = ADMIN.apply(AdminState(host.admin_state), AdminAction.DISABLE, name=name)
            self._set_admin(host, state, reason, actor)
            record(
                session,
                EventKind.HOST_DISABLED,
                actor,
                f"host {name} disabled: {reason}",
                host=name,
                data={"reason": reason},
            )
        return host

    async def enable(self, name: str, reason: str | None, actor: str) -> Host:
        reason = validation.reason(reason) if reason is not None else None
        async with self.store.write() as session:
            host = await get_host(session, name)
            state = ADMIN.apply(AdminState(host.admin_state), AdminAction.ENABLE, name=name)
            self._set_admin(host, state, reason, actor)
            suffix = f": {reason}" if reason else ""
            record(
                session,
                EventKind.HOST_ENABLED,
                actor,
                f"host {name} enabled{suffix}",
                host=name,
                data={"reason": reason},
            )
        return host

    @staticmethod
    def _set_admin(host: Host, state: AdminState, reason: str | None, actor: str) -> None:
        host.admin_state = state.value
        host.admin_reason = reason
        host.admin_actor = actor
        host.admin_changed_at = utcnow()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
