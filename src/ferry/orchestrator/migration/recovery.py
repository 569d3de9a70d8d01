"""A step failed at an agent. Before the stream the migration unwinds (or fails as lost); from
then on both ends are asked where the instance runs, and `judge` decides: complete the move,
unwind, fail it as lost, or wait with the reason shown."""

from __future__ import annotations

import asyncio
import logging

from ferry.agent_client import AgentUnavailable
from ferry.db.models import Host, Migration
from ferry.db.types import utcnow
from ferry.domain.events import EventKind
from ferry.domain.migration import MigrationAction
from ferry.orchestrator.migration.context import Context
from ferry.orchestrator.migration.jobs import CANCELLABLE, STREAMING, Job
from ferry.orchestrator.migration.judge import ARRIVED_DETAIL, Finding, Sighting, Verdict, judge
from ferry.orchestrator.migration.switch import switch
from ferry.orchestrator.migration.unwind import lose, unwind
from ferry.services.migrations import ACTIVE
from ferry.services.store import record

log = logging.getLogger(__name__)


async def recover(ctx: Context, job: Job, trouble: str) -> None:
    """A step failed at an agent. Before streaming, unwind (or, when the source no longer
    runs the guest, fail it as lost); from then on, ask both ends where the instance runs
    and act on `judge`'s finding, or wait with the reason shown."""
    if job.state.value not in ACTIVE:
        return  # a leftover removal: retried next pass
    log.debug("migration %s: %s", job.migration.id, trouble)
    if job.state in STREAMING:
        finding = await _find(ctx, job)
    else:
        finding = await _before_stream(ctx, job, trouble)
    try:
        await _act(ctx, job, finding)
    except AgentUnavailable as exc:
        await _wait(ctx, job, f"{finding.reason}; {exc}")


async def _before_stream(ctx: Context, job: Job, trouble: str) -> Finding:
    """Nothing was sent yet: the source keeps the guest, unless it does not run it any more
    (its QEMU died). Then the instance is lost there, and is said so at once: a drain moves
    it cold instead of trying it live on one destination after another."""
    source = await _sight(ctx, job.source, job)
    if source.lacks:
        return Finding(Verdict.LOST, f"the source does not run it ({source}): {trouble}")
    return Finding(Verdict.STAYED, trouble)


async def _find(ctx: Context, job: Job) -> Finding:
    source, dest = await asyncio.gather(_sight(ctx, job.source, job), _sight(ctx, job.dest, job))
    m = job.migration
    last = m.progress_at or m.started_at or m.created_at
    waited = (utcnow() - last).total_seconds()
    return judge(job.state, source, dest, waited, job.policy.no_progress_s)


async def _sight(ctx: Context, host: Host, job: Job) -> Sighting:
    try:
        guest = await ctx.agents.guest(ctx.url(host), job.instance.id)
    except AgentUnavailable as exc:
        return Sighting(host.name, trouble=str(exc))
    if guest is None:
        return Sighting(host.name)
    return Sighting(host.name, guest.power, arrived=guest.detail == ARRIVED_DETAIL)


async def _act(ctx: Context, job: Job, finding: Finding) -> None:
    if finding.verdict is Verdict.MOVED:
        await switch(ctx, job)
    elif finding.verdict is Verdict.STAYED:
        cancel = job.migration.cancel_requested and job.state in CANCELLABLE
        action = MigrationAction.CANCEL if cancel else MigrationAction.FAIL
        await unwind(ctx, job, action, finding.reason)
    elif finding.verdict is Verdict.LOST:
        await lose(ctx, job, finding.reason)
    else:
        await _wait(ctx, job, finding.reason)


async def _wait(ctx: Context, job: Job, reason: str) -> None:
    """Show why the migration cannot go on: in its `error`, and one event per new reason."""
    async with ctx.store.write() as session:
        m = await session.get(Migration, job.migration.id)
        if m is None or m.state not in ACTIVE or m.error == reason:
            return
        m.error = reason
        record(
            session,
            EventKind.MIGRATION_WAITING,
            m.actor,
            f"migration of {job.name} to {job.dest.name} waits: {reason}",
            host=job.source.name,
            instance_id=job.instance.id,
            migration_id=m.id,
            data={"reason": reason},
        )
    log.warning("migration %s waits: %s", job.migration.id, reason)
