"""A copy that an end could not remove when its migration finished (the paused source of a
completed move, or the incoming target of an unwound one): recorded on the migration as its
`leftover`, and its removal retried each pass until the agent answers."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Migration
from ferry.domain.events import EventKind
from ferry.domain.migration import MigrationState
from ferry.orchestrator.migration.context import Context
from ferry.orchestrator.migration.jobs import SOURCE, Job
from ferry.services.store import record

log = logging.getLogger(__name__)


def leave(session: AsyncSession, m: Migration, job: Job, end: str, why: str) -> None:
    """Record, in the transaction that finishes the migration, that `end` keeps a copy."""
    host = job.source if end == SOURCE else job.dest
    m.leftover = end
    note = f"{host.name} still holds a copy of {job.name}; removing it when it answers: {why}"
    if m.state == MigrationState.COMPLETED:
        m.error = note
    record(
        session,
        EventKind.MIGRATION_LEFTOVER,
        m.actor,
        note,
        host=host.name,
        instance_id=job.instance.id,
        migration_id=m.id,
        data={"end": end, "error": why},
    )


async def clean_up(ctx: Context, job: Job) -> None:
    """Retry removing the copy a finished migration left behind, until its agent answers:
    the paused source of a completed move, or the incoming target of an unwound one."""
    if job.moving_again:
        return  # the newer migration may own that end's copy now: after it
    completed = job.migration.leftover == SOURCE
    host = job.source if completed else job.dest
    if job.instance.host_id == host.id:  # it moved back there since: nothing stale
        await _cleaned(ctx, job, f"{job.name} lives on {host.name} again; nothing to remove")
        return
    if completed:
        trouble = await ctx.attempt(
            lambda: ctx.agents.finish_source(ctx.url(host), job.instance.id)
        )
    else:
        trouble = await ctx.attempt(
            lambda: ctx.agents.abort(ctx.url(host), job.instance.id, source=False)
        )
    if trouble is not None:
        log.debug("migration %s: %s keeps a copy: %s", job.migration.id, host.name, trouble)
        return
    await _cleaned(ctx, job, f"{host.name} no longer holds a copy of {job.name}")


async def _cleaned(ctx: Context, job: Job, message: str) -> None:
    async with ctx.store.write() as session:
        m = await session.get(Migration, job.migration.id)
        if m is None or m.leftover is None:
            return
        host = job.source if m.leftover == SOURCE else job.dest
        m.leftover = None
        if m.state == MigrationState.COMPLETED:
            m.error = None
        record(
            session,
            EventKind.MIGRATION_CLEANED,
            m.actor,
            message,
            host=host.name,
            instance_id=job.instance.id,
            migration_id=m.id,
        )
