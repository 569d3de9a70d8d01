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
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Drain, Host, Instance, Migration
from ferry.db.types import utcnow
from ferry.domain import validation
from ferry.domain.convergence import ConvergencePolicy
from ferry.domain.drain import DRAIN, OPEN_DRAIN_STATES, DrainAction, DrainState
from ferry.domain.drain_policy import DrainPolicy
from ferry.domain.errors import Conflict
from ferry.domain.events import EventKind
from ferry.domain.host import MAINTENANCE, MaintenanceAction, MaintenanceState
from ferry.domain.instance import InstanceState
from ferry.domain.migration import MIGRATION, MigrationAction, MigrationState
from ferry.scheduler.planner import Plan
from ferry.services.hosts import get_host
from ferry.services.migrations import ACTIVE, advance
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
class DrainMove:
    """One migration of a drain, with the names an operator reads."""

    migration: Migration
    instance: str
    destination: str | None


@dataclass
class MaintenanceStatus:
    host: Host
    drain: Drain | None
    instances_remaining: int
    moves: list[DrainMove] = field(default_factory=list)


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


async def _moves(session: AsyncSession, drain: Drain) -> list[DrainMove]:
    """The drain's migrations, latest attempt per instance last."""
    rows = await session.execute(
        select(Migration, Instance.name, Host.name)
        .join(Instance, Migration.instance_id == Instance.id)
        .outerjoin(Host, Migration.dest_host_id == Host.id)
        .where(Migration.drain_id == drain.id)
        .order_by(Instance.name, Migration.attempt)
    )
    return [DrainMove(m, name, dest) for m, name, dest in rows.all()]


async def _abort_migrations(session: AsyncSession, drain: Drain, actor: str) -> None:
    """Queued migrations of the drain end at once; those under way are asked to abort (the
    migration loop unwinds them: the instance stays, running, where it is)."""
    rows = await session.scalars(
        select(Migration).where(Migration.drain_id == drain.id, Migration.state.in_(ACTIVE))
    )
    for migration in rows.all():
        state = MigrationState(migration.state)
        if state is MigrationState.QUEUED:
            advance(migration, MigrationAction.CANCEL)
            migration.error = "the drain was cancelled"
            migration.finished_at = utcnow()
        elif MIGRATION.can(state, MigrationAction.CANCEL):
            migration.cancel_requested = True
        else:
            continue  # post-copy: it can only finish
        record(
            session,
            EventKind.MIGRATION_ABORT_REQUESTED,
            actor,
            f"migration {migration.id[:8]} aborted: the drain was cancelled",
            instance_id=migration.instance_id,
            migration_id=migration.id,
            drain_id=drain.id,
        )


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
    def __init__(self, store: Store, placer: Placer, defaults: DrainPolicy) -> None:
        self.store = store
        self.placer = placer
        self.defaults = defaults

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
        self,
        name: str,
        reason: str,
        actor: str,
        *,
        force: bool = False,
        policy: dict[str, Any] | None = None,
    ) -> tuple[Host, Drain]:
        """Plan, check, then exclude the host and open its drain, all in one transaction."""
        reason = validation.reason(reason)
        limits = self.defaults.with_overrides(policy or {})
        ConvergencePolicy().with_overrides(limits.migration)  # refuse a bad one now
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
                policy={**limits.to_json(), "force": force},
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
                await _abort_migrations(session, drain, actor)
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

    async def retry(self, name: str, actor: str) -> Host:
        """A failed drain runs again: a new round in which every instance still on the host
        gets fresh attempts (after the operator freed capacity or fixed a host)."""
        async with self.store.write() as session:
            host = await get_host(session, name)
            host.maintenance_state = _transition(host, MaintenanceAction.RETRY).value
            drain = await latest_drain(session, host.id)
            assert drain is not None  # drain_failed always has its drain
            drain.state = DRAIN.apply(DrainState(drain.state), DrainAction.RETRY).value
            drain.error = None
            drain.finished_at = None
            drain.policy = {**drain.policy, "round_since": utcnow().isoformat()}
            host.maintenance_changed_at = utcnow()
            record(
                session,
                EventKind.DRAIN_RETRIED,
                actor,
                f"drain of {name} retried",
                host=name,
                drain_id=drain.id,
            )
        return host

    async def status(self, name: str) -> MaintenanceStatus:
        async with self.store.reading() as session:
            host = await get_host(session, name)
            drain = await latest_drain(session, host.id)
            remaining = len(await instances_on(session, host.id))
            moves = await _moves(session, drain) if drain else []
        return MaintenanceStatus(host, drain, remaining, moves)

    @staticmethod
    def _finish(drain: Drain, action: DrainAction) -> None:
        drain.state = DRAIN.apply(DrainState(drain.state), action).value
        if DrainState(drain.state) not in OPEN_DRAIN_STATES:
            drain.finished_at = utcnow()
