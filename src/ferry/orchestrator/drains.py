"""Drains: the level-triggered loop that empties a host in maintenance.

Each pass reads every running drain from the database and the migrations it made, so it resumes
correctly after any restart:

- fan-out: each instance still on the host gets one migration record (`queued`), live for a
  running instance, cold for one that does not run (its record and claim move);
- scheduling: queued migrations get a destination and its claim while the limits allow
  (`max_parallel` drain migrations in the cluster, `max_outbound` + `prepare_ahead` in flight from
  the source, `max_inbound` into a destination). The planned destination is kept while it still
  passes the scheduler's filters; otherwise the scheduler picks. Smallest moves go first, by the
  bytes they send (RAM plus a local disk's allocated bytes: each one done frees the source
  soonest); while a migration from the source is stalling (its downtime limit escalated), no new
  one starts there, so it keeps the link to converge. A stream copying a disk counts against
  `max_outbound` as one carrying RAM does: both share the source's link;
- retries: a failed migration is retried after `retry_backoff_s` (doubling) on a destination
  that has not failed a live move of that instance (a cold move may go anywhere), up to
  `max_attempts`;
- the end: no instance left -> the drain completes and the host is `in_maintenance`; nothing in
  flight or waiting but instances that could not be moved -> the drain fails naming each, and
  the host is `drain_failed` (it stays out of service); the source agent down -> the drain fails
  with that reason once nothing is in flight.

Which migrations stream at once (`max_outbound`) is enforced by the migration loop, which starts
a prepared migration only when its source has a free stream.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Drain, Host, Instance, Migration, new_id
from ferry.db.types import utcnow
from ferry.domain.convergence import ConvergencePolicy
from ferry.domain.drain import DRAIN, DrainAction, DrainState
from ferry.domain.drain_policy import DrainPolicy
from ferry.domain.events import SYSTEM_ACTOR, EventKind
from ferry.domain.host import MAINTENANCE, Liveness, MaintenanceAction, MaintenanceState
from ferry.domain.instance import InstanceState
from ferry.domain.migration import MigrationAction, MigrationKind, MigrationState
from ferry.orchestrator.drain_cold import MOVABLE_COLD, disk_stays, move_cold
from ferry.scheduler.framework import NoValidHost
from ferry.scheduler.model import Candidate, Request
from ferry.services import placement
from ferry.services.maintenance import instances_on
from ferry.services.migrations import ACTIVE, advance
from ferry.services.store import Store, record

log = logging.getLogger(__name__)

_S = MigrationState
IN_FLIGHT = [s.value for s in (_S.SCHEDULED, _S.PREPARING, _S.RUNNING, _S.POSTCOPY, _S.SWITCHING)]
MOVABLE_LIVE = {InstanceState.RUNNING.value}


@dataclass
class _Load:
    """Migrations in flight across the cluster, for the limits."""

    drains: int = 0
    outbound: Counter[int] = field(default_factory=Counter)
    inbound: Counter[int] = field(default_factory=Counter)
    stalling: set[int] = field(default_factory=set)  # sources with an escalated migration


@dataclass
class _Tally:
    """Where each instance of the drained host stands after this pass."""

    queued: list[Migration] = field(default_factory=list)
    busy: int = 0  # in flight, or waiting for a retry or for the instance to finish booting
    failed: dict[str, str] = field(default_factory=dict)  # instance name -> why


class DrainReconciler:
    def __init__(
        self,
        store: Store,
        placer: placement.Placer,
        defaults: DrainPolicy,
        convergence: ConvergencePolicy,
    ) -> None:
        self.store = store
        self.placer = placer
        self.defaults = defaults
        self.convergence = convergence
        self._earlier: Counter[str] = Counter()

    async def step(self) -> None:
        async with self.store.reading() as session:
            ids = (
                await session.scalars(
                    select(Drain.id)
                    .where(Drain.state == DrainState.RUNNING.value)
                    .order_by(Drain.created_at)
                )
            ).all()
        for drain_id in ids:
            try:
                await self._drive(drain_id)
            except Exception:
                log.exception("drain %s: pass failed; retrying next pass", drain_id)

    async def _drive(self, drain_id: str) -> None:
        async with self.store.write() as session:
            drain = await session.get(Drain, drain_id)
            if drain is None or drain.state != DrainState.RUNNING.value:
                return
            host = await session.get(Host, drain.host_id)
            assert host is not None
            policy = DrainPolicy.from_json(drain.policy)
            instances = await instances_on(session, host.id)
            tries, self._earlier, moved = await _attempts(session, drain)
            _set(drain, "instances_moved", len(moved))
            if not instances:
                _finish(session, drain, host, DrainAction.COMPLETE, None)
                return
            tally = self._tally(session, drain, host, instances, tries, policy)
            _set(drain, "instances_failed", len(tally.failed))
            if tally.queued and self.placer.liveness.of(host) is Liveness.UP:
                await self._schedule(session, drain, host, policy, tally.queued, tries)
            elif tally.queued and tally.busy == len(tally.queued):
                why = f"the agent of {host.name} is down: its instances cannot be moved"
                _finish(session, drain, host, DrainAction.FAIL, why, cancel=tally.queued)
                return
            if tally.failed and tally.busy == 0 and not tally.queued:
                reasons = "; ".join(f"{name}: {why}" for name, why in sorted(tally.failed.items()))
                why = f"{len(tally.failed)} instance(s) could not be moved ({reasons})"
                _finish(session, drain, host, DrainAction.FAIL, why)

    # -- where each instance stands --------------------------------------------------------

    def _tally(
        self,
        session: AsyncSession,
        drain: Drain,
        host: Host,
        instances: list[Instance],
        tries: dict[str, list[Migration]],
        policy: DrainPolicy,
    ) -> _Tally:
        tally, now = _Tally(), utcnow()
        for inst in instances:
            attempts = tries.get(inst.id, [])
            last = attempts[-1] if attempts else None
            if last is not None and last.state == _S.QUEUED and last.cancel_requested:
                _end(session, last, MigrationAction.CANCEL, "aborted on request", inst.name)
            if (stuck := disk_stays(inst, host)) is not None:
                tally.failed[inst.name] = stuck
            elif last is None or last.state == _S.COMPLETED:
                if inst.state in MOVABLE_LIVE | MOVABLE_COLD:
                    tally.queued.append(self._queue(session, drain, host, inst, policy, attempts))
                tally.busy += 1  # a deleting or building instance: wait for it
            elif last.state in ACTIVE:
                tally.busy += 1
                if last.state == _S.QUEUED:
                    tally.queued.append(last)
            elif last.state == _S.CANCELLED:
                tally.failed[inst.name] = "its migration was aborted by an operator"
            elif len(attempts) >= policy.max_attempts:
                tally.failed[inst.name] = f"{len(attempts)} attempts failed; last: {last.error}"
            else:
                tally.busy += 1
                ended = last.finished_at or now
                if (now - ended).total_seconds() >= policy.backoff_s(len(attempts)):
                    tally.queued.append(self._queue(session, drain, host, inst, policy, attempts))
        return tally

    def _queue(
        self,
        session: AsyncSession,
        drain: Drain,
        host: Host,
        instance: Instance,
        policy: DrainPolicy,
        attempts: list[Migration],
    ) -> Migration:
        live = instance.state in MOVABLE_LIVE
        convergence = self.convergence.with_overrides(policy.migration)
        migration = Migration(
            id=new_id(),
            instance_id=instance.id,
            source_host_id=host.id,
            drain_id=drain.id,
            kind=(MigrationKind.LIVE if live else MigrationKind.COLD).value,
            state=_S.QUEUED.value,
            attempt=len(attempts) + 1 + self._earlier[instance.id],
            actor=drain.actor,
            policy=convergence.to_json(),
            downtime_limit_ms=convergence.downtime_ladder_ms[0],
        )
        session.add(migration)
        attempts.append(migration)
        what = "retry" if attempts[:-1] else "migration"
        record(
            session,
            EventKind.MIGRATION_QUEUED,
            SYSTEM_ACTOR,
            f"{what} of {instance.name} off {host.name} queued (attempt {migration.attempt}, "
            f"{migration.kind})",
            host=host.name,
            instance_id=instance.id,
            drain_id=drain.id,
            data={"attempt": migration.attempt, "kind": migration.kind},
        )
        return migration

    # -- giving queued migrations a destination --------------------------------------------

    async def _schedule(
        self,
        session: AsyncSession,
        drain: Drain,
        host: Host,
        policy: DrainPolicy,
        queued: list[Migration],
        tries: dict[str, list[Migration]],
    ) -> None:
        await session.flush()  # new queued records get their ids
        load = await _load(session)
        if host.id in load.stalling or _at_limit(load, host, policy):
            return  # before reading the cluster: most passes of a busy drain stop here
        candidates = {c.name: c for c in await self.placer.candidates(session)}
        planned = {e.get("instance_id"): e.get("destination") for e in drain.plan or []}
        names = {ident: name for ident, name in (await session.execute(select(Host.id, Host.name)))}
        ids = {name: ident for ident, name in names.items()}
        instances = {i.id: i for i in await instances_on(session, host.id)}
        for migration in sorted(queued, key=lambda m: _size(instances.get(m.instance_id))):
            if _at_limit(load, host, policy):
                return
            instance = instances.get(migration.instance_id)
            if instance is None:
                continue
            # A destination that failed a live move is not tried again for it; a cold move
            # (the guest died, perhaps while those live moves were tried) may go anywhere.
            failed_on = {
                names.get(m.dest_host_id or 0)
                for m in tries.get(instance.id, [])
                if m.state == _S.FAILED and m.kind == migration.kind
            }
            hosts = [
                c for c in candidates.values() if c.name != host.name and c.name not in failed_on
            ]
            request = await self._request(session, instance, host, migration)
            passing = self.placer.scheduler.filter(hosts, request)
            if not passing.hosts:
                why = str(NoValidHost(passing.removed, len(hosts)))
                _end(session, migration, MigrationAction.FAIL, why, instance.name)
                continue
            room = [c for c in passing.hosts if load.inbound[ids[c.name]] < policy.max_inbound]
            chosen = self._choose(passing.hosts, room, request, planned.get(instance.id))
            if chosen is None:
                continue  # its host receives its limit already: next pass
            dest = await session.get(Host, ids[chosen.name])
            assert dest is not None
            await self._claim(session, migration, instance, host, dest)
            candidates[chosen.name] = chosen.claimed(request.need, instance.server_group)
            load.drains += 1
            load.outbound[host.id] += 1
            load.inbound[dest.id] += 1

    async def _request(
        self, session: AsyncSession, instance: Instance, host: Host, migration: Migration
    ) -> Request:
        live = migration.kind == MigrationKind.LIVE.value
        return Request(
            placement.need_of(instance),
            frozenset(p.network for p in instance.ports),
            await self.placer.group(session, instance.server_group, moving=instance.id),
            placement.traits(host) if live else None,
            disk_pool=placement.disk_pool_of(instance),
        )

    def _choose(
        self,
        passing: list[Candidate],
        room: list[Candidate],
        request: Request,
        planned: str | None,
    ) -> Candidate | None:
        """The planned destination while it passes every filter (waiting while it receives its
        limit, so the plan's balance holds), else the scheduler's pick among hosts with room."""
        if any(h.name == planned for h in passing):
            return next((h for h in room if h.name == planned), None)
        return self.placer.scheduler.select(room, request) if room else None

    async def _claim(
        self,
        session: AsyncSession,
        migration: Migration,
        instance: Instance,
        source: Host,
        dest: Host,
    ) -> None:
        self.placer.claim(session, dest, instance, migration.id)
        migration.dest_host_id = dest.id
        advance(migration, MigrationAction.SCHEDULE)
        record(
            session,
            EventKind.MIGRATION_SCHEDULED,
            SYSTEM_ACTOR,
            f"migration of {instance.name} from {source.name} to {dest.name} scheduled",
            host=source.name,
            instance_id=instance.id,
            migration_id=migration.id,
            drain_id=migration.drain_id,
            data={"source": source.name, "destination": dest.name, "attempt": migration.attempt},
        )
        if migration.kind == MigrationKind.COLD.value:
            await move_cold(session, migration, instance, source, dest)


# -- helpers -----------------------------------------------------------------------------------


def _set(drain: Drain, column: str, value: int) -> None:
    """Write only a change: a pass that changes nothing must not wake the loops again."""
    if getattr(drain, column) != value:
        setattr(drain, column, value)


async def _attempts(
    session: AsyncSession, drain: Drain
) -> tuple[dict[str, list[Migration]], Counter[str], set[str]]:
    """The drain's migrations of its current round per instance (a retried drain starts a new
    round: earlier failures no longer count), how many each instance had before, and the
    instances any round moved."""
    since = (
        datetime.fromisoformat(drain.policy["round_since"])
        if "round_since" in drain.policy
        else None
    )
    rows = await session.scalars(
        select(Migration)
        .where(Migration.drain_id == drain.id)
        .order_by(Migration.attempt, Migration.created_at)
    )
    tries: dict[str, list[Migration]] = {}
    earlier: Counter[str] = Counter()
    moved: set[str] = set()
    for m in rows.all():
        if m.state == _S.COMPLETED:
            moved.add(m.instance_id)
        if since is not None and m.created_at < since:
            earlier[m.instance_id] += 1
        else:
            tries.setdefault(m.instance_id, []).append(m)
    return tries, earlier, moved


async def _load(session: AsyncSession) -> _Load:
    load = _Load()
    rows = await session.scalars(select(Migration).where(Migration.state.in_(IN_FLIGHT)))
    for m in rows.all():
        if m.drain_id is not None:
            load.drains += 1
        load.outbound[m.source_host_id] += 1
        if m.dest_host_id is not None:
            load.inbound[m.dest_host_id] += 1
        if m.state == _S.RUNNING and m.escalated_at_pass > 0 and m.drain_id is not None:
            load.stalling.add(m.source_host_id)
    return load


def _at_limit(load: _Load, source: Host, policy: DrainPolicy) -> bool:
    """No drain migration may start now: the cluster's or the source's limit is reached."""
    return (
        load.drains >= policy.max_parallel
        or load.outbound[source.id] >= policy.max_outbound + policy.prepare_ahead
    )


def _size(instance: Instance | None) -> tuple[int, str]:
    """Smallest move first: RAM and local disk bytes to copy alike."""
    return (sum(placement.bytes_to_move(instance)), instance.name) if instance else (0, "")


def _end(
    session: AsyncSession, migration: Migration, action: MigrationAction, why: str, name: str
) -> None:
    advance(migration, action)
    migration.error = why
    migration.finished_at = utcnow()
    kind = (
        EventKind.MIGRATION_CANCELLED
        if action is MigrationAction.CANCEL
        else (EventKind.MIGRATION_FAILED)
    )
    record(
        session,
        kind,
        SYSTEM_ACTOR,
        f"migration of {name} {migration.state}: {why}",
        instance_id=migration.instance_id,
        migration_id=migration.id,
        drain_id=migration.drain_id,
        data={"error": why, "attempt": migration.attempt},
    )


def _finish(
    session: AsyncSession,
    drain: Drain,
    host: Host,
    action: DrainAction,
    why: str | None,
    *,
    cancel: list[Migration] | None = None,
) -> None:
    drain.state = DRAIN.apply(DrainState(drain.state), action).value
    drain.error = why
    to = MaintenanceAction.DRAINED if action is DrainAction.COMPLETE else MaintenanceAction.FAIL
    host.maintenance_state = MAINTENANCE.apply(
        MaintenanceState(host.maintenance_state), to, name=host.name
    ).value
    host.maintenance_changed_at = utcnow()
    for migration in cancel or []:
        if migration.state == _S.QUEUED:
            _end(session, migration, MigrationAction.CANCEL, why or "drain failed", host.name)
    if action is DrainAction.COMPLETE:
        drain.finished_at = utcnow()
        record(
            session,
            EventKind.DRAIN_COMPLETED,
            SYSTEM_ACTOR,
            f"drain of {host.name} completed: {drain.instances_moved} instance(s) moved",
            host=host.name,
            drain_id=drain.id,
            data={"moved": drain.instances_moved},
        )
        record(
            session,
            EventKind.MAINTENANCE_COMPLETED,
            SYSTEM_ACTOR,
            f"host {host.name} is in maintenance",
            host=host.name,
            drain_id=drain.id,
        )
        return
    record(
        session,
        EventKind.DRAIN_FAILED,
        SYSTEM_ACTOR,
        f"drain of {host.name} failed: {why}",
        host=host.name,
        drain_id=drain.id,
        data={"error": why, "failed": drain.instances_failed},
    )
    record(
        session,
        EventKind.MAINTENANCE_FAILED,
        SYSTEM_ACTOR,
        f"host {host.name} could not be drained; it stays out of service",
        host=host.name,
        drain_id=drain.id,
    )
