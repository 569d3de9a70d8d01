"""Host maintenance: enter (with dry run), exit, status, and finishing drains that are done.

Entering first plans where every instance would go (the evacuation planner, with the scheduler's
filters) and refuses, naming each instance no host can take, unless the operator forces a
partial drain. It then excludes the host from scheduling in the same transaction that records
the request, and opens a drain holding the plan. Moving the instances off is the drain
orchestrator's work; a drain whose host holds no instance completes at once and the host becomes
`in_maintenance`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Drain, Host, Instance
from ferry.db.types import utcnow
from ferry.domain import validation
from ferry.domain.drain import DRAIN, OPEN_DRAIN_STATES, DrainAction, DrainState
from ferry.domain.errors import Conflict
from ferry.domain.events import SYSTEM_ACTOR, EventKind
from ferry.domain.host import MAINTENANCE, MaintenanceAction, MaintenanceState
from ferry.domain.instance import InstanceState
from ferry.scheduler.planner import Plan
from ferry.services.hosts import get_host
from ferry.services.placement import Placer
from ferry.services.store import Store, record


@dataclass
class MaintenancePreview:
    """What entering maintenance would do, computed without changing anything."""

    host: Host
    from_state: MaintenanceState
    to_state: MaintenanceState
    instances: list[Instance]
    plan: Plan
    notes: list[str] = field(default_factory=list)


@dataclass
class MaintenanceStatus:
    host: Host
    drain: Drain | None
    instances_remaining: int


async def instances_on(session: AsyncSession, host_id: int) -> list[Instance]:
    rows = await session.scalars(
        select(Instance)
        .where(Instance.host_id == host_id, Instance.state != InstanceState.DELETED.value)
        .order_by(Instance.name)
    )
    return list(rows.all())


async def latest_drain(session: AsyncSession, host_id: int) -> Drain | None:
    return await session.scalar(
        select(Drain).where(Drain.host_id == host_id).order_by(Drain.created_at.desc()).limit(1)
    )


def _transition(host: Host, action: MaintenanceAction) -> MaintenanceState:
    return MAINTENANCE.apply(MaintenanceState(host.maintenance_state), action, name=host.name)


def refusal(host: str, plan: Plan) -> Conflict:
    """The pre-check's verdict when some instance has nowhere to go."""
    reasons = "; ".join(f"{name}: {why}" for name, why in plan.unplaced.items())
    total = len(plan.placements) + len(plan.unplaced)
    return Conflict(
        f"cannot drain {host}: {len(plan.unplaced)} of {total} instance(s) have no "
        f"destination ({reasons}); free capacity, or enter with force to drain the rest",
        details={"unplaced": dict(plan.unplaced)},
    )


def plan_record(plan: Plan) -> list[dict[str, str | None]]:
    """The plan as the drain stores it: one entry per instance, its destination or why none."""
    entries: list[dict[str, str | None]] = [
        {"instance_id": p.instance_id, "instance": p.instance, "destination": p.destination}
        for p in plan.placements
    ]
    entries += [
        {"instance_id": None, "instance": name, "destination": None, "reason": why}
        for name, why in plan.unplaced.items()
    ]
    return sorted(entries, key=lambda e: e["instance"] or "")


def _notes(instances: list[Instance], plan: Plan) -> list[str]:
    if not instances:
        return ["the host holds no instance: it enters maintenance at once"]
    notes = [f"{len(instances)} instance(s) would be drained from the host"]
    if plan.complete:
        notes.append(
            f"pre-check passed: every instance has a destination on {len(plan.loads)} host(s)"
        )
    else:
        notes.append(
            f"pre-check failed: {len(plan.unplaced)} instance(s) have no destination; entering "
            "is refused unless forced (a forced drain moves the others and then fails)"
        )
    return notes


class MaintenanceService:
    def __init__(self, store: Store, placer: Placer) -> None:
        self.store = store
        self.placer = placer

    async def preview(self, name: str, reason: str) -> MaintenancePreview:
        validation.reason(reason)
        async with self.store.reading() as session:
            host = await get_host(session, name)
            target = _transition(host, MaintenanceAction.ENTER)
            instances = await instances_on(session, host.id)
            plan = await self.placer.plan(session, host)
        return MaintenancePreview(
            host,
            MaintenanceState(host.maintenance_state),
            target,
            instances,
            plan,
            _notes(instances, plan),
        )

    async def enter(
        self, name: str, reason: str, actor: str, *, force: bool = False
    ) -> tuple[Host, Drain]:
        """Plan, check, then exclude the host and open its drain, all in one transaction."""
        reason = validation.reason(reason)
        async with self.store.write() as session:
            host = await get_host(session, name)
            host.maintenance_state = _transition(host, MaintenanceAction.ENTER).value
            plan = await self.placer.plan(session, host)
            if not plan.complete and not force:
                raise refusal(name, plan)
            now = utcnow()
            host.maintenance_reason = reason
            host.maintenance_actor = actor
            host.maintenance_since = now
            host.maintenance_changed_at = now
            instances = await instances_on(session, host.id)
            drain = Drain(
                host_id=host.id,
                reason=reason,
                actor=actor,
                instances_total=len(instances),
                plan=plan_record(plan),
                policy={"force": force},
            )
            session.add(drain)
            await session.flush()
            record(
                session,
                EventKind.MAINTENANCE_ENTERED,
                actor,
                f"host {name} entering maintenance: {reason}",
                host=name,
                drain_id=drain.id,
                data={
                    "reason": reason,
                    "instances": len(instances),
                    "force": force,
                    "unplaced": dict(plan.unplaced),
                },
            )
            record(
                session,
                EventKind.DRAIN_STARTED,
                actor,
                f"drain of {name} started with {len(instances)} instance(s)",
                host=name,
                drain_id=drain.id,
            )
        return host, drain

    async def exit(self, name: str, reason: str | None, actor: str) -> Host:
        """Back in service. An open drain is cancelled first (its migrations with it)."""
        reason = validation.reason(reason) if reason is not None else None
        async with self.store.write() as session:
            host = await get_host(session, name)
            previous = host.maintenance_state
            host.maintenance_state = _transition(host, MaintenanceAction.EXIT).value
            drain = await latest_drain(session, host.id)
            if drain is not None and DrainState(drain.state) in OPEN_DRAIN_STATES:
                self._finish(drain, DrainAction.CANCEL)
                record(
                    session,
                    EventKind.DRAIN_CANCELLED,
                    actor,
                    f"drain of {name} cancelled by exit from maintenance",
                    host=name,
                    drain_id=drain.id,
                )
            host.maintenance_reason = None
            host.maintenance_actor = actor
            host.maintenance_since = None
            host.maintenance_changed_at = utcnow()
            suffix = f": {reason}" if reason else ""
            record(
                session,
                EventKind.MAINTENANCE_EXITED,
                actor,
                f"host {name} back in service (was {previous}){suffix}",
                host=name,
                drain_id=drain.id if drain else None,
                data={"reason": reason, "previous_state": previous},
            )
        return host

    async def status(self, name: str) -> MaintenanceStatus:
        async with self.store.reading() as session:
            host = await get_host(session, name)
            drain = await latest_drain(session, host.id)
            remaining = len(await instances_on(session, host.id))
        return MaintenanceStatus(host, drain, remaining)

    async def complete_empty_drains(self) -> list[str]:
        """Finish every running drain whose host holds no instance any more."""
        finished: list[str] = []
        async with self.store.write() as session:
            rows = await session.execute(
                select(Drain, Host)
                .join(Host, Drain.host_id == Host.id)
                .where(Drain.state == DrainState.RUNNING.value)
            )
            for drain, host in rows.all():
                if await instances_on(session, host.id):
                    continue
                self._finish(drain, DrainAction.COMPLETE)
                host.maintenance_state = _transition(host, MaintenanceAction.DRAINED).value
                host.maintenance_changed_at = utcnow()
                record(
                    session,
                    EventKind.DRAIN_COMPLETED,
                    SYSTEM_ACTOR,
                    f"drain of {host.name} completed",
                    host=host.name,
                    drain_id=drain.id,
                )
                record(
                    session,
                    EventKind.MAINTENANCE_COMPLETED,
                    SYSTEM_ACTOR,
                    f"host {host.name} is in maintenance",
                    host=host.name,
                    drain_id=drain.id,
                )
                finished.append(host.name)
        return finished

    @staticmethod
    def _finish(drain: Drain, action: DrainAction) -> None:
        drain.state = DRAIN.apply(DrainState(drain.state), action).value
        if DrainState(drain.state) not in OPEN_DRAIN_STATES:
            drain.finished_at = utcnow()
