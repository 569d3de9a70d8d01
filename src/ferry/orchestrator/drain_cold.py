"""Drain moves of instances that do not run: by their record (host and claim), never with a
local disk, which only a live move copies."""

from __future__ import annotations

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Allocation, Host, Instance, Migration
from ferry.db.types import utcnow
from ferry.domain.events import SYSTEM_ACTOR, EventKind
from ferry.domain.instance import InstanceState
from ferry.domain.migration import MigrationAction
from ferry.services import placement
from ferry.services.migrations import advance
from ferry.services.store import record

MOVABLE_COLD = {InstanceState.STOPPED.value, InstanceState.ERROR.value}


def disk_stays(instance: Instance, host: Host) -> str | None:
    """Why an instance that does not run cannot leave: its disk is on the host's own storage,
    and only a live move copies it (a cold one would leave the disk behind, and the clean-up
    of the source would remove the only copy). None when it may move."""
    if instance.state not in MOVABLE_COLD or not placement.on_local_disk(instance):
        return None
    return (
        f"it is {instance.state} and its disk is on {host.name}'s local storage: only a live "
        "move copies the disk (start it again, or delete it)"
    )


async def move_cold(
    session: AsyncSession, migration: Migration, instance: Instance, source: Host, dest: Host
) -> None:
    """An instance that does not run moves by its record: host and claim, in this transaction."""
    await session.flush()
    await session.execute(
        delete(Allocation).where(
            Allocation.instance_id == instance.id, Allocation.host_id == source.id
        )
    )
    await session.execute(
        update(Allocation)
        .where(Allocation.instance_id == instance.id, Allocation.host_id == dest.id)
        .values(migration_id=None)
    )
    instance.host_id = dest.id
    advance(migration, MigrationAction.MOVE_COLD)
    migration.finished_at = utcnow()
    record(
        session,
        EventKind.MIGRATION_COMPLETED,
        SYSTEM_ACTOR,
        f"{instance.name} ({instance.state}) moved cold from {source.name} to {dest.name}",
        host=dest.name,
        instance_id=instance.id,
        migration_id=migration.id,
        drain_id=migration.drain_id,
        data={"source": source.name, "destination": dest.name, "kind": "cold"},
    )
    # What a dead guest left on the source (its stopped QEMU's run directory and taps, or a
    # handed-over copy) would outlive the move: the migration loop removes it like the source
    # of a live move (finish-source removes only what does not run, and nothing is fine).
    migration.leftover = "source"
    migration.error = f"{source.name} may still hold a copy of {instance.name}; removing it"
    record(
        session,
        EventKind.MIGRATION_LEFTOVER,
        SYSTEM_ACTOR,
        migration.error,
        host=source.name,
        instance_id=instance.id,
        migration_id=migration.id,
        drain_id=migration.drain_id,
        data={"end": "source", "error": "moved cold"},
    )
