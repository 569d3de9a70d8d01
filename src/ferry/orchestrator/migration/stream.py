"""The stream: the destination prepares an incoming QEMU, the source streams the guest to it,
and each pass reads the stream's progress and applies the convergence policy (the downtime
ladder, the completion and no-progress timeouts)."""

from __future__ import annotations

from datetime import timedelta

from ferry.agent_client import AgentUnavailable
from ferry.db.models import Migration
from ferry.db.types import utcnow
from ferry.domain.convergence import TimeoutAction
from ferry.domain.events import EventKind
from ferry.domain.migration import MigrationAction, MigrationState
from ferry.orchestrator.instances import guest_spec
from ferry.orchestrator.migration.context import Context
from ferry.orchestrator.migration.jobs import MIB, Job
from ferry.orchestrator.migration.ports import disk_port
from ferry.orchestrator.migration.switch import switch
from ferry.orchestrator.migration.unwind import unwind
from ferry.protocol import DiskCopyIn, IncomingIn, MigrateIn, MigrationProgressOut, TuneIn
from ferry.services.migrations import ACTIVE

_S = MigrationState


async def prepare(ctx: Context, job: Job, port: int | None) -> None:
    """The destination listens, on the migration's port or else on `port` (this pass's)."""
    port = job.migration.dest_port or port
    if port is None:
        return  # every migration port of the destination is held: a later pass
    if job.migration.dest_port is None:
        # Recorded before the destination listens: a retry of this step (after a failed
        # call, or a restart) asks for the same port, which the agent may hold already.
        await ctx.update(job, None, None, "", dest_port=port)
    spec = guest_spec(job.instance)
    copy = DiskCopyIn(port=disk_port(port), source_host=job.source.name)
    body = IncomingIn(
        spec=spec, port=port, params=job.params(), disk=copy if job.copies_disk else None
    )
    await ctx.agents.incoming(ctx.url(job.dest), body)
    await ctx.update(
        job,
        MigrationAction.PREPARE,
        EventKind.MIGRATION_PREPARING,
        f"{job.dest.name} is ready to receive {job.name} on {port}",
    )


def _send(job: Job) -> MigrateIn:
    address = job.dest.migration_address
    return MigrateIn(
        address=address,
        port=job.migration.dest_port or 0,
        tls_hostname=address,
        params=job.params(),
        disk_port=job.disk_port,
    )


async def start(ctx: Context, job: Job) -> None:
    """The source starts the stream (with a local disk: the disk's mirror first)."""
    try:
        await ctx.agents.migrate(ctx.url(job.source), job.instance.id, _send(job))
    except AgentUnavailable:
        progress = await ctx.agents.progress(ctx.url(job.source), job.instance.id)
        if progress.status in ("none", "failed", "cancelled"):
            raise
    what = "its disk, then its RAM," if job.copies_disk else ""
    await ctx.update(
        job,
        MigrationAction.START,
        EventKind.MIGRATION_RUNNING,
        f"{job.name} streaming {what} from {job.source.name} to {job.dest.name} over TLS",
        started_at=utcnow(),
        progress_at=utcnow(),
    )


async def _disk_in_sync(ctx: Context, job: Job, progress: MigrationProgressOut) -> None:
    """The disk's copy is in sync: the source starts the RAM (the same call, idempotent)."""
    await ctx.agents.migrate(ctx.url(job.source), job.instance.id, _send(job))
    await ctx.update(
        job,
        None,
        EventKind.MIGRATION_DISK_READY,
        f"the disk of {job.name} is in sync on {job.dest.name} "
        f"({progress.disk_copied_bytes / MIB:.1f} MiB copied): its RAM follows",
    )


async def monitor(ctx: Context, job: Job) -> None:
    progress = await ctx.agents.progress(ctx.url(job.source), job.instance.id)
    disk_was_ready = job.migration.disk_ready
    await _store_progress(ctx, job, progress)
    if progress.status == "mirroring" and progress.disk_ready and not disk_was_ready:
        await _disk_in_sync(ctx, job, progress)
    elif progress.status == "mirroring" and progress.disk_ready:
        await ctx.agents.migrate(ctx.url(job.source), job.instance.id, _send(job))  # a retry
    elif progress.status == "mirroring":
        await _converge(ctx, job, progress)
    elif progress.status == "completed":
        if job.state is _S.RUNNING:
            await ctx.update(job, MigrationAction.SWITCHOVER, None, "")
        await switch(ctx, job)
    elif progress.status in ("failed", "cancelled", "none"):
        await unwind(
            ctx,
            job,
            MigrationAction.FAIL,
            progress.error or f"the source reports the migration {progress.status}",
        )
    elif job.state is _S.RUNNING:
        await _converge(ctx, job, progress)


async def cancel(ctx: Context, job: Job) -> None:
    try:
        await unwind(ctx, job, MigrationAction.CANCEL, "aborted on request")
    except AgentUnavailable:
        if job.state is not _S.RUNNING:
            raise
        # The source would not abort: it handed over already, or its agent is away.
        await monitor(ctx, job)


async def _converge(ctx: Context, job: Job, progress: MigrationProgressOut) -> None:
    policy, m, now = job.policy, job.migration, utcnow()
    started = m.started_at or now
    if now - started > timedelta(seconds=job.timeout_s()):
        await _timeout(ctx, job, f"did not complete within {job.timeout_s():g}s")
    elif m.progress_at and now - m.progress_at > timedelta(seconds=policy.no_progress_s):
        await _timeout(ctx, job, f"no bytes moved for {policy.no_progress_s:g}s")
    elif progress.passes - m.escalated_at_pass >= policy.stall_passes + 1:
        await _escalate(ctx, job, progress)


async def _escalate(ctx: Context, job: Job, progress: MigrationProgressOut) -> None:
    policy = job.policy
    current = job.migration.downtime_limit_ms or policy.downtime_ladder_ms[0]
    step = policy.next_downtime(current)
    if step is None:
        return
    await ctx.agents.tune(ctx.url(job.source), job.instance.id, TuneIn(downtime_limit_ms=step))
    await ctx.update(
        job,
        None,
        EventKind.MIGRATION_ESCALATED,
        f"{job.name}: {progress.passes} passes without converging; "
        f"downtime limit {current} -> {step} ms",
        downtime_limit_ms=step,
        escalated_at_pass=progress.passes,
    )


async def _timeout(ctx: Context, job: Job, why: str) -> None:
    if job.policy.on_timeout is TimeoutAction.POSTCOPY:
        await ctx.agents.tune(ctx.url(job.source), job.instance.id, TuneIn(start_postcopy=True))
        await ctx.update(
            job,
            MigrationAction.POSTCOPY,
            EventKind.MIGRATION_POSTCOPY,
            f"{job.name} {why}: switched to post-copy",
        )
    else:
        await unwind(ctx, job, MigrationAction.FAIL, f"{why}; aborted by policy")


async def _store_progress(ctx: Context, job: Job, p: MigrationProgressOut) -> None:
    async with ctx.store.write() as session:
        m = await session.get(Migration, job.migration.id)
        if m is None:
            return
        if p.transferred_bytes > (m.bytes_sent or 0) or p.disk_copied_bytes > (
            m.disk_bytes_copied or 0
        ):
            m.progress_at = utcnow()
        m.bytes_total, m.bytes_sent = p.total_bytes, p.transferred_bytes
        m.bytes_remaining, m.dirty_rate = p.remaining_bytes, p.dirty_rate_bytes
        m.passes, m.throughput_mbps = p.passes, p.throughput_mbps
        m.expected_downtime_ms = p.expected_downtime_ms
        if p.disk_total_bytes or p.disk_copied_bytes:
            m.disk_bytes_total, m.disk_bytes_copied = p.disk_total_bytes, p.disk_copied_bytes
            m.disk_throughput_mbps, m.disk_ready = p.disk_throughput_mbps, p.disk_ready
        if p.downtime_ms is not None:
            m.downtime_ms = p.downtime_ms
        if p.total_time_ms is not None:
            m.total_time_ms = p.total_time_ms
        if m.state in ACTIVE:
            m.error = None  # the source reports again: nothing to wait for
    job.migration = m or job.migration
