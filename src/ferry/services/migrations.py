"""Migration requests: validated, destination chosen by the scheduler and claimed in the same
transaction (allocations on both ends while in flight), aborts requested."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Host, Instance, Migration
from ferry.domain.convergence import ConvergencePolicy
from ferry.domain.errors import Conflict, NotFound
from ferry.domain.events import EventKind
from ferry.domain.instance import InstanceState
from ferry.domain.migration import (
    ACTIVE_MIGRATION_STATES,
    MIGRATION,
    MigrationAction,
    MigrationState,
)
from ferry.scheduler.framework import NoValidHost
from ferry.scheduler.model import Request
from ferry.services import placement
from ferry.services.hosts import get_host
from ferry.services.instances import get_instance
from ferry.services.store import Store, record

ACTIVE = [s.value for s in ACTIVE_MIGRATION_STATES]


async def active_migration(session: AsyncSession, instance_id: str) -> Migration | None:
    return await session.scalar(
        select(Migration).where(Migration.instance_id == instance_id, Migration.state.in_(ACTIVE))
    )


async def get_migration(session: AsyncSession, migration_id: str) -> Migration:
    migration = await session.get(Migration, migration_id)
    if migration is None:
        raise NotFound(f"no migration {migration_id!r}")
    return migration


def advance(migration: Migration, action: MigrationAction) -> None:
    migration.state = MIGRATION.apply(
        MigrationState(migration.state), action, name=migration.id[:8]
    ).value


class MigrationService:
    def __init__(self, store: Store, placer: placement.Placer, defaults: ConvergencePolicy):
        self.store = store
        self.placer = placer
        self.defaults = defaults

    async def request(
        self,
        instance_name: str,
        dest: str | None,
        actor: str,
        overrides: dict[str, Any] | None = None,
    ) -> Migration:
        policy = self.defaults.with_overrides(overrides or {})
        async with self.store.write() as session:
            instance = await get_instance(session, instance_name)
            if instance.state != InstanceState.RUNNING:
                raise Conflict(
                    f"instance {instance.name} is {instance.state}; only running "
                    "instances migrate live"
                )
            if await active_migration(session, instance.id):
                raise Conflict(f"instance {instance.name} is already migrating")
            source = await session.get(Host, instance.host_id) if instance.host_id else None
            if source is None:
                raise Conflict(f"instance {instance.name} has no host")
            target = await self._destination(session, instance, source, dest)
            migration = Migration(
                instance_id=instance.id,
                source_host_id=source.id,
                dest_host_id=target.id,
                actor=actor,
                policy=policy.to_json(),
                downtime_limit_ms=policy.downtime_ladder_ms[0],
            )
            session.add(migration)
            await session.flush()
            self.placer.claim(session, target, instance, migration.id)
            advance(migration, MigrationAction.SCHEDULE)
            record(
                session,
                EventKind.MIGRATION_SCHEDULED,
                actor,
                f"migration of {instance.name} from {source.name} to {target.name} scheduled",
                host=source.name,
                instance_id=instance.id,
                migration_id=migration.id,
                data={"source": source.name, "destination": target.name},
            )
        return migration

    async def _destination(
        self, session: AsyncSession, instance: Instance, source: Host, wanted: str | None
    ) -> Host:
        request = Request(
            placement.need_of(instance),
            frozenset(p.network for p in instance.ports),
            await self.placer.group(session, instance.server_group, moving=instance.id),
            placement.traits(source),
            disk_pool=placement.disk_pool_of(instance),
        )
        if wanted is not None:
            if wanted == source.name:
                raise Conflict(f"instance {instance.name} already runs on {wanted}")
            await get_host(session, wanted)
        try:
            return await self.placer.choose(session, request, only=wanted, exclude=source.name)
        except NoValidHost as exc:
            target = f"host {wanted}" if wanted else "any other host"
            raise Conflict(f"cannot migrate {instance.name} to {target}: {exc}") from exc

    async def abort(self, migration_id: str, actor: str) -> Migration:
        async with self.store.write() as session:
            migration = await get_migration(session, migration_id)
            state = MigrationState(migration.state)
            if not MIGRATION.can(state, MigrationAction.CANCEL):
                MIGRATION.apply(state, MigrationAction.CANCEL, name=migration.id[:8])
            migration.cancel_requested = True
            record(
                session,
                EventKind.MIGRATION_ABORT_REQUESTED,
                actor,
                f"abort of migration {migration.id[:8]} requested",
                instance_id=migration.instance_id,
                migration_id=migration.id,
            )
        return migration

    async def list(
        self,
        *,
        state: str | None = None,
        host: str | None = None,
        instance: str | None = None,
        limit: int = 200,
    ) -> list[Migration]:
        query = select(Migration).order_by(Migration.created_at.desc()).limit(limit)
        async with self.store.reading() as session:
            if state is not None:
                query = query.where(Migration.state == state)
            if host is not None:
                host_id = (await get_host(session, host)).id
                query = query.where(
                    (Migration.source_host_id == host_id) | (Migration.dest_host_id == host_id)
                )
            if instance is not None:
                query = query.where(
                    Migration.instance_id == (await get_instance(session, instance)).id
                )
            return list((await session.scalars(query)).all())

    async def names(self, migration: Migration) -> dict[str, str | None]:
        """Instance, source and destination names of a migration, for display."""
        async with self.store.reading() as session:
            instance = await session.get(Instance, migration.instance_id)
            source = await session.get(Host, migration.source_host_id)
            dest = (
                await session.get(Host, migration.dest_host_id) if migration.dest_host_id else None
            )
        return {
            "instance": instance.name if instance else migration.instance_id,
            "source": source.name if source else "?",
            "destination": dest.name if dest else None,
        }

    async def get(self, migration_id: str) -> Migration:
        async with self.store.reading() as session:
            return await get_migration(session, migration_id)
