"""A migration that failed or was cancelled: the source keeps (or, when lost, no longer runs)
the guest, the destination copy is removed and its claim released."""

from __future__ import annotations

from sqlalchemy import delete

from ferry.agent_client import AgentUnavailable
from ferry.db.models import Allocation, Instance, Migration
from ferry.db.types import utcnow
from ferry.domain.events import EventKind
from ferry.domain.instance import InstanceState
from ferry.domain.migration import MigrationAction, MigrationState
from ferry.orchestrator.migration.context import Context
from ferry.orchestrator.migration.jobs import DESTINATION, STREAMING, Job
from ferry.orchestrator.migration.leftovers import leave
from ferry.services.instances import InstanceService
from ferry.services.migrations import ACTIVE, advance
from ferry.services.store import record

_S = MigrationState


async def unwind(ctx: Context, job: Job, action: MigrationAction, why: str) -> None:
    """Source keeps running the guest, destination cleaned, claim released. While streaming,
    only once the source confirmed the abort: otherwise the guest may have moved. Before,
    either end's confirmation stops a stream that may have begun (no target, no landing)."""
    source_trouble = await ctx.attempt(
        lambda: ctx.agents.abort(ctx.url(job.source), job.instance.id, source=True)
    )
    if source_trouble is not None and job.state in STREAMING:
        raise AgentUnavailable(f"{job.source.name} could not abort: {source_trouble}")
    dest_trouble = await ctx.attempt(
        lambda: ctx.agents.abort(ctx.url(job.dest), job.instance.id, source=False)
    )
    if source_trouble is not None and dest_trouble is not None and job.state is _S.PREPARING:
        raise AgentUnavailable(f"neither end could abort: {source_trouble}; {dest_trouble}")
    leftover = (DESTINATION, dest_trouble) if dest_trouble is not None else None
    await _close(ctx, job, action, why, leftover=leftover)


async def lose(ctx: Context, job: Job, why: str) -> None:
    """Neither end runs the guest: the migration failed and so did the instance."""
    trouble = await ctx.attempt(
        lambda: ctx.agents.abort(ctx.url(job.dest), job.instance.id, source=False)
    )
    leftover = (DESTINATION, trouble) if trouble is not None else None
    await _close(ctx, job, MigrationAction.FAIL, why, leftover=leftover, lost=True)


async def _close(
    ctx: Context,
    job: Job,
    action: MigrationAction,
    why: str,
    *,
    leftover: tuple[str, str] | None = None,
    lost: bool = False,
) -> None:
    """Failed or cancelled: the instance stays on the source, the destination claim goes."""
    kind = (
        EventKind.MIGRATION_CANCELLED
        if action is MigrationAction.CANCEL
        else EventKind.MIGRATION_FAILED
    )
    async with ctx.store.write() as session:
        m = await session.get(Migration, job.migration.id)
        if m is None or m.state not in ACTIVE:
            return
        advance(m, action)
        m.error = why
        m.finished_at = utcnow()
        await session.execute(delete(Allocation).where(Allocation.migration_id == m.id))
        record(
            session,
            kind,
            m.actor,
            f"migration of {job.name} to {job.dest.name} {m.state}: {why}",
            host=job.source.name,
            instance_id=job.instance.id,
            migration_id=m.id,
            data={"error": why},
        )
        if leftover is not None:
            leave(session, m, job, *leftover)
        instance = await session.get(Instance, job.instance.id)
        if lost and instance is not None and instance.state == InstanceState.RUNNING:
            InstanceService.mark_error(session, instance, job.source.name, why)
