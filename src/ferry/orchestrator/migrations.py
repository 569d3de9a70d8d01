"""Drives every active migration one step per pass, from what the database says and what the
agents report (level-triggered: after a controller restart the same code picks up each migration
where its record stands, asking the agents what really happened).

  scheduled  -> destination prepares an incoming QEMU            -> preparing
  preparing  -> source starts the TLS stream                      -> running
  running    -> progress stored each pass; convergence policy:
                stalled passes climb the downtime ladder; the completion timeout and the
                no-progress timeout take the policy's action (abort, or post-copy)
  completed  -> destination runs it (announce), the instance's host changes, the source
                claim is released, the source process removed      -> completed
  any failure or abort -> both ends cleaned, source keeps running, claim released
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select

from ferry.controller.agents import AgentClient, AgentUnavailable
from ferry.db.models import Allocation, Host, Instance, Migration
from ferry.db.types import utcnow
from ferry.domain.convergence import ConvergencePolicy, TimeoutAction
from ferry.domain.events import EventKind
from ferry.domain.migration import MigrationAction, MigrationState
from ferry.orchestrator.instances import guest_spec
from ferry.protocol import IncomingIn, MigrateIn, MigrationParamsIn, MigrationProgressOut, TuneIn
from ferry.services.migrations import ACTIVE, advance
from ferry.services.store import Store, record

log = logging.getLogger(__name__)
PORT_BASE, PORT_SPAN = 49152, 10000
MIB = 2**20


@dataclass
class Job:
    migration: Migration
    instance: Instance
    source: Host
    dest: Host

    @property
    def policy(self) -> ConvergencePolicy:
        return ConvergencePolicy.from_json(self.migration.policy)

    def params(self) -> MigrationParamsIn:
        policy = self.policy
        return MigrationParamsIn(
            max_bandwidth_bytes=policy.max_bandwidth_mib * MIB,
            downtime_limit_ms=self.migration.downtime_limit_ms or policy.downtime_ladder_ms[0],
            auto_converge=policy.auto_converge,
            postcopy=policy.postcopy,
        )


class MigrationReconciler:
    def __init__(self, store: Store, agents: AgentClient) -> None:
        self.store = store
        self.agents = agents

    async def step(self) -> None:
        jobs = await self._jobs()
        await asyncio.gather(*(self._drive(job) for job in jobs))

    async def _jobs(self) -> list[Job]:
        async with self.store.reading() as session:
            migrations = (
                await session.scalars(select(Migration).where(Migration.state.in_(ACTIVE)))
            ).all()
            jobs = []
            for m in migrations:
                instance = await session.get(Instance, m.instance_id)
                source = await session.get(Host, m.source_host_id)
                dest = await session.get(Host, m.dest_host_id) if m.dest_host_id else None
                if instance and source and dest:
                    jobs.append(Job(m, instance, source, dest))
            for job in jobs:
                job.instance.ports  # noqa: B018 - load while the session is open
        return jobs

    async def _drive(self, job: Job) -> None:
        state = MigrationState(job.migration.state)
        try:
            if job.migration.cancel_requested and state is not MigrationState.POSTCOPY:
                await self._unwind(job, MigrationAction.CANCEL, "aborted on request")
            elif state is MigrationState.SCHEDULED:
                await self._prepare(job)
            elif state is MigrationState.PREPARING:
                await self._start(job)
            elif state in (MigrationState.RUNNING, MigrationState.POSTCOPY):
                await self._monitor(job)
            elif state is MigrationState.SWITCHING:
                await self._switch(job)
        except AgentUnavailable as exc:
            await self._agent_trouble(job, state, exc)
        except Exception:
            log.exception("migration %s: step failed; retrying next pass", job.migration.id)

    # -- steps -----------------------------------------------------------------------------

    async def _prepare(self, job: Job) -> None:
        port = PORT_BASE + int(job.migration.id.replace("-", "")[:8], 16) % PORT_SPAN
        spec = guest_spec(job.instance)
        await self.agents.incoming(
            self._url(job.dest), IncomingIn(spec=spec, port=port, params=job.params())
        )
        await self._update(
            job,
            MigrationAction.PREPARE,
            EventKind.MIGRATION_PREPARING,
            f"{job.dest.name} is ready to receive {job.instance.name} on {port}",
            dest_port=port,
        )

    async def _start(self, job: Job) -> None:
        address = job.dest.migration_address
        body = MigrateIn(
            address=address,
            port=job.migration.dest_port or 0,
            tls_hostname=address,
            params=job.params(),
        )
        try:
            await self.agents.migrate(self._url(job.source), job.instance.id, body)
        except AgentUnavailable:
            progress = await self.agents.progress(self._url(job.source), job.instance.id)
            if progress.status in ("none", "failed", "cancelled"):
                raise
        await self._update(
            job,
            MigrationAction.START,
            EventKind.MIGRATION_RUNNING,
            f"{job.instance.name} streaming from {job.source.name} to {job.dest.name} over TLS",
            started_at=utcnow(),
            progress_at=utcnow(),
        )

    async def _monitor(self, job: Job) -> None:
        progress = await self.agents.progress(self._url(job.source), job.instance.id)
        await self._store_progress(job, progress)
        if progress.status == "completed":
            await self._update(
                job,
                MigrationAction.SWITCHOVER
                if job.migration.state == MigrationState.RUNNING
                else None,
                None,
                "",
            )
            await self._switch(job)
        elif progress.status in ("failed", "cancelled", "none"):
            await self._unwind(
                job,
                MigrationAction.FAIL,
                progress.error or f"the source reports the migration {progress.status}",
            )
        elif job.migration.state == MigrationState.RUNNING:
            await self._converge(job, progress)

    async def _converge(self, job: Job, progress: MigrationProgressOut) -> None:
        policy, m, now = job.policy, job.migration, utcnow()
        started = m.started_at or now
        if now - started > timedelta(seconds=policy.timeout_s(job.instance.ram_mb)):
            await self._timeout(
                job, f"did not complete within {policy.timeout_s(job.instance.ram_mb):g}s"
            )
        elif m.progress_at and now - m.progress_at > timedelta(seconds=policy.no_progress_s):
            await self._timeout(job, f"no bytes moved for {policy.no_progress_s:g}s")
        elif progress.passes - m.escalated_at_pass >= policy.stall_passes + 1:
            current = m.downtime_limit_ms or policy.downtime_ladder_ms[0]
            step = policy.next_downtime(current)
            if step is not None:
                await self.agents.tune(
                    self._url(job.source), job.instance.id, TuneIn(downtime_limit_ms=step)
                )
                await self._update(
                    job,
                    None,
                    EventKind.MIGRATION_ESCALATED,
                    f"{job.instance.name}: {progress.passes} passes without "
                    f"converging; downtime limit {current} -> {step} ms",
                    downtime_limit_ms=step,
                    escalated_at_pass=progress.passes,
                )

    async def _timeout(self, job: Job, why: str) -> None:
        if job.policy.on_timeout is TimeoutAction.POSTCOPY:
            await self.agents.tune(
                self._url(job.source), job.instance.id, TuneIn(start_postcopy=True)
            )
            await self._update(
                job,
                MigrationAction.POSTCOPY,
                EventKind.MIGRATION_POSTCOPY,
                f"{job.instance.name} {why}: switched to post-copy",
            )
        else:
            await self._unwind(job, MigrationAction.FAIL, f"{why}; aborted by policy")

    async def _switch(self, job: Job) -> None:
        await self.agents.finish_destination(self._url(job.dest), job.instance.id)
        async with self.store.write() as session:
            m = await session.get(Migration, job.migration.id)
            instance = await session.get(Instance, job.instance.id)
            if (
                m is None
                or instance is None
                or m.state not in (MigrationState.SWITCHING, MigrationState.POSTCOPY)
            ):
                return
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
            advance(m, MigrationAction.COMPLETE)
            m.finished_at = utcnow()
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
        try:
            await self.agents.finish_source(self._url(job.source), job.instance.id)
        except AgentUnavailable as exc:
            log.warning("migration %s: source cleanup failed: %s", job.migration.id, exc)

    # -- failure ---------------------------------------------------------------------------

    async def _unwind(self, job: Job, action: MigrationAction, why: str) -> None:
        """Source keeps running the guest, destination cleaned, claim released."""
        for url, source in ((self._url(job.source), True), (self._url(job.dest), False)):
            try:
                await self.agents.abort(url, job.instance.id, source=source)
            except AgentUnavailable as exc:
                log.warning("migration %s: abort on %s failed: %s", job.migration.id, url, exc)
        kind = (
            EventKind.MIGRATION_CANCELLED
            if action is MigrationAction.CANCEL
            else EventKind.MIGRATION_FAILED
        )
        async with self.store.write() as session:
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
                f"migration of {job.instance.name} to {job.dest.name} {m.state}: {why}",
                host=job.source.name,
                instance_id=job.instance.id,
                migration_id=m.id,
                data={"error": why},
            )

    async def _agent_trouble(self, job: Job, state: MigrationState, exc: Exception) -> None:
        if state in (MigrationState.SCHEDULED, MigrationState.PREPARING):
            await self._unwind(job, MigrationAction.FAIL, str(exc))
        else:
            log.warning("migration %s: %s (retrying)", job.migration.id, exc)

    # -- records ---------------------------------------------------------------------------

    async def _store_progress(self, job: Job, p: MigrationProgressOut) -> None:
        async with self.store.write() as session:
            m = await session.get(Migration, job.migration.id)
            if m is None:
                return
            if p.transferred_bytes > (m.bytes_sent or 0):
                m.progress_at = utcnow()
            m.bytes_total, m.bytes_sent = p.total_bytes, p.transferred_bytes
            m.bytes_remaining, m.dirty_rate = p.remaining_bytes, p.dirty_rate_bytes
            m.passes, m.throughput_mbps = p.passes, p.throughput_mbps
            m.expected_downtime_ms = p.expected_downtime_ms
            if p.downtime_ms is not None:
                m.downtime_ms = p.downtime_ms
        job.migration = m or job.migration

    async def _update(
        self,
        job: Job,
        action: MigrationAction | None,
        kind: EventKind | None,
        message: str,
        **fields: object,
    ) -> None:
        async with self.store.write() as session:
            m = await session.get(Migration, job.migration.id)
            if m is None:
                return
            if action is not None:
                advance(m, action)
            for name, value in fields.items():
                setattr(m, name, value)
            if kind is not None:
                record(
                    session,
                    kind,
                    m.actor,
                    message,
                    host=job.source.name,
                    instance_id=job.instance.id,
                    migration_id=m.id,
                )
        job.migration = m

    @staticmethod
    def _url(host: Host) -> str:
        if not host.agent_url:
            raise AgentUnavailable(f"host {host.name} has no agent API")
        return host.agent_url
