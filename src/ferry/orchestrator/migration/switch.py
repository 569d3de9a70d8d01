"""The move: the destination runs the guest, the source copy is removed, then one transaction
gives the instance its new host and moves its claims."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Allocation, Instance, Migration
from ferry.db.types import utcnow
from ferry.domain.events import EventKind
from ferry.domain.migration import MigrationAction, MigrationState
from ferry.orchestrator.migration.context import Context
from ferry.orchestrator.migration.jobs import SOURCE, STREAMING, Job
from ferry.orchestrator.migration.leftovers import leave
from ferry.services.migrations import advance
from ferry.services.store import record


async def switch(ctx: Context, job: Job) -> None:
    """Destination runs it, source copy removed, then the record: each call idempotent, so
    a pass cut short anywhere is repeated. A source that cannot be cleaned up now does not
    hold the move back: it is committed with the source as a leftover."""
    await ctx.agents.finish_destination(ctx.url(job.dest), job.instance.id)
    trouble = await ctx.attempt(
        lambda: ctx.agents.finish_source(ctx.url(job.source), job.instance.id)
    )
    await _complete(ctx, job, trouble)


async def _complete(ctx: Context, job: Job, source_trouble: str | None) -> None:
    """The destination runs the guest: the instance, its claims and the record follow."""
    async with ctx.store.write() as session:
        m = await session.get(Migration, job.migration.id)
        instance = await session.get(Instance, job.instance.id)
        if m is None or instance is None or MigrationState(m.state) not in STREAMING:
            return
        if m.state == MigrationState.RUNNING:
            advance(m, MigrationAction.SWITCHOVER)
        advance(m, MigrationAction.COMPLETE)
        m.finished_at, m.error = utcnow(), None
        await _move_claims(session, m, instance, job)
        record(
            session,
            EventKind.MIGRATION_COMPLETED,
            m.actor,
            f"{instance.name} now runs on {job.dest.name} (downtime {m.downtime_ms} ms, "
            f"{(m.finished_at - (m.started_at or m.created_at)).total_seconds():.1f}s)",
            host=job.dest.name,
            instance_id=instance.id,
            migration_id=m.id,
            data={"downtime_ms": m.downtime_ms, "source": job.source.name},
        )
        if source_trouble is not None:
            leave(session, m, job, SOURCE, source_trouble)


async def _move_claims(session: AsyncSession, m: Migration, instance: Instance, job: Job) -> None:
    instance.host_id = job.dest.id
    await session.execute(
        delete(Allocation).where(
            Allocation.instance_id == instance.id, Allocation.host_id == job.source.id
        )
    )
    for alloc in (
        await session.scalars(select(Allocation).where(Allocation.migration_id == m.id))
    ).all():
        alloc.migration_id = None
