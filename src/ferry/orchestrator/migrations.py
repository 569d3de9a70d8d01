"""Drives every migration one step per pass, from what the database says and what the agents
report (level-triggered: after a controller restart the same code picks up each migration where
its record stands, asking the agents what really happened).

  scheduled  -> destination prepares an incoming QEMU            -> preparing
  preparing  -> source starts the TLS stream                      -> running
  running    -> progress stored each pass; convergence policy:
                stalled passes climb the downtime ladder; the completion timeout and the
                no-progress timeout take the policy's action (abort, or post-copy)
  switching  -> destination runs it (finish_destination, announce), source process removed
                (finish_source), then one transaction: the instance's host changes, the
                source claim is released                          -> completed
  any failure or abort -> source abort (it keeps running), destination abort, claim released

Crash safety rests on three rules:

- Agent calls come before the record that they happened, and every call is idempotent, so a
  pass interrupted anywhere is simply repeated: finish_destination returns the running guest,
  finish_source returns when the source copy is gone, aborts of what is gone succeed.
- Before the stream, an agent that fails a step unwinds the migration, unless the source no
  longer runs the guest (its QEMU died): then it failed as lost, the instance in error (a
  drain moves it cold rather than live again elsewhere). From `running` on, when
  the source cannot report the stream (its agent is unreachable, or the guest is no longer
  there) or a step at either end fails, both agents are asked where the instance runs and
  `judge` decides: the destination runs it as its own guest -> complete the move; the source runs
  it and the destination has no incoming copy -> unwind at once; the source runs it and the stream
  stays invisible for the policy's `no_progress_s` -> unwind (the safe direction); neither end runs
  it -> failed, instance in error; anything else -> wait, with the reason in the migration's
  `error` and one `migration.waiting` event per new reason. From `running` on, a migration is
  unwound only when its source runs the guest, and committed only after the source itself
  confirmed the abort (the guest keeps running there).
- An end that cannot be cleaned up does not hold the migration: a completed move whose source
  agent is unreachable, or an unwind whose destination agent is, is committed with `leftover`
  naming that end (event `migration.leftover`), and later passes retry the removal until the agent
  answers (event `migration.cleaned`). Records and allocations follow the instance, never the
  leftover copy (a paused, handed-over source, or an incoming target).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.controller.agents import AgentClient, AgentUnavailable
from ferry.db.models import Allocation, Drain, Host, Instance, Migration
from ferry.db.types import utcnow
from ferry.domain.convergence import ConvergencePolicy, TimeoutAction
from ferry.domain.drain_policy import DrainPolicy
from ferry.domain.events import EventKind
from ferry.domain.instance import InstanceState
from ferry.domain.migration import MigrationAction, MigrationState
from ferry.orchestrator.instances import guest_spec
from ferry.orchestrator.migration_judge import (
    ARRIVED_DETAIL,
    Finding,
    Sighting,
    Verdict,
    judge,
)
from ferry.orchestrator.migration_ports import assign_ports
from ferry.protocol import IncomingIn, MigrateIn, MigrationParamsIn, MigrationProgressOut, TuneIn
from ferry.services.instances import InstanceService
from ferry.services.migrations import ACTIVE, advance
from ferry.services.store import Store, record

log = logging.getLogger(__name__)
MIB = 2**20

_S = MigrationState
STREAMING = (_S.RUNNING, _S.POSTCOPY, _S.SWITCHING)  # the source may have sent the guest
CANCELLABLE = (_S.SCHEDULED, _S.PREPARING, _S.RUNNING)  # nothing handed over yet
SOURCE, DESTINATION = "source", "destination"


# -- loading -----------------------------------------------------------------------------------


async def _instances(session: AsyncSession, ids: set[str]) -> dict[str, Instance]:
    if not ids:
        return {}
    rows = await session.scalars(select(Instance).where(Instance.id.in_(ids)))
    return {i.id: i for i in rows.all()}  # ports load with them (selectin)


async def _hosts(session: AsyncSession, ids: set[int]) -> dict[int, Host]:
    if not ids:
        return {}
    return {h.id: h for h in (await session.scalars(select(Host).where(Host.id.in_(ids)))).all()}


async def _streams(session: AsyncSession, drain_ids: set[str]) -> dict[str, int]:
    """Each drain's limit of streams from one source (`max_outbound`)."""
    if not drain_ids:
        return {}
    rows = await session.execute(select(Drain.id, Drain.policy).where(Drain.id.in_(drain_ids)))
    return {ident: DrainPolicy.from_json(policy).max_outbound for ident, policy in rows.all()}


# -- the reconciler ----------------------------------------------------------------------------


def gate(jobs: list[Job]) -> None:
    """Which prepared drain migrations may start streaming this pass: a source streams at most
    its drain's `max_outbound` at once, and none starts while one of its drain migrations is
    stalling (its downtime limit escalated), so that one keeps the link to converge."""
    active = [j for j in jobs if j.state.value in ACTIVE]
    streaming = Counter(j.source.id for j in active if j.state in STREAMING)
    stalling = {
        j.source.id
        for j in active
        if j.streams is not None and j.state is _S.RUNNING and j.migration.escalated_at_pass
    }
    waiting = [j for j in active if j.state in (_S.SCHEDULED, _S.PREPARING)]
    for job in sorted(waiting, key=lambda j: j.migration.created_at):
        if job.streams is None:
            continue
        if job.source.id in stalling or streaming[job.source.id] >= job.streams:
            job.may_stream = False
        else:
            streaming[job.source.id] += 1


@dataclass
class Job:
    migration: Migration
    instance: Instance
    source: Host
    dest: Host
    moving_again: bool = False  # a finished migration whose instance is in flight once more
    streams: int | None = None  # a drain's limit of streams from one source (None: no limit)
    may_stream: bool = True

    @property
    def state(self) -> MigrationState:
        return MigrationState(self.migration.state)

    @property
    def policy(self) -> ConvergencePolicy:
        return ConvergencePolicy.from_json(self.migration.policy)

    @property
    def name(self) -> str:
        return self.instance.name

    def params(self) -> MigrationParamsIn:
        policy = self.policy
        return MigrationParamsIn(
            max_bandwidth_bytes=policy.max_bandwidth_mib * MIB,
            downtime_limit_ms=self.migration.downtime_limit_ms or policy.downtime_ladder_ms[0],
            auto_converge=policy.auto_converge,
            postcopy=policy.postcopy,
        )


def ports_for(jobs: list[Job]) -> dict[str, int]:
    """Ports for the migrations still to be given one, none held by another migration into the
    same host (one being prepared, prepared or streaming, or a destination copy to remove)."""
    holding = (_S.SCHEDULED, _S.PREPARING, *STREAMING)
    held = [
        (j.dest.id, j.migration.dest_port)
        for j in jobs
        if j.migration.dest_port is not None
        and (j.state in holding or j.migration.leftover == "destination")
    ]
    wanted = [
        (j.migration.id, j.dest.id)
        for j in jobs
        if j.state is _S.SCHEDULED and j.migration.dest_port is None
    ]
    return assign_ports(wanted, held)


STRAGGLE_S = 5.0  # how long a pass waits for its migrations' steps (see MigrationReconciler)


@dataclass
class EventCounts:
    """Agents' migration events since the controller started (served at GET /v1/metrics)."""

    received: int = 0  # guests named in agents' reports
    accepted: int = 0  # of those, guests of a migration in flight through the reporting host
    readings: int = 0  # progress readings made at once because of an event


class MigrationReconciler:
    """`poll_s`: a running migration's progress is read from its source at most once in that
    many seconds, however often other commits wake the loop (each reading is an agent call and
    a write): with many migrations in flight, polling each one on every pass would grow with
    the square of their number.

    Each migration's step runs as a task of its own. A pass waits at most `straggle_s` for its
    steps; a step still running then (an agent slow to answer a call) goes on in the background,
    and later passes leave its migration alone until it is done, so one slow agent does not hold
    up every other migration's steps and progress. `close()` cancels such steps at shutdown
    (every step is idempotent: a cancelled one is repeated after a restart, like a crash).

    `hint`: an agent heard its hypervisor announce that a guest's migration changed (QEMU's
    MIGRATION and MIGRATION_PASS events): that migration's progress is read at its next pass,
    due or not, so a completion, a failure or a new pass is acted on within a pass of the event
    rather than a poll later."""

    def __init__(
        self,
        store: Store,
        agents: AgentClient,
        poll_s: float = 0.0,
        straggle_s: float = STRAGGLE_S,
    ) -> None:
        self.store = store
        self.agents = agents
        self.poll_s = poll_s
        self.straggle_s = straggle_s
        self._busy: dict[str, asyncio.Task[None]] = {}  # migration id -> its step still running
        self._read_at: dict[str, float] = {}  # migration id -> when its progress was read
        self._ports: dict[str, int] = {}  # this pass's ports for migrations to prepare
        self._ends: dict[str, tuple[str, str]] = {}  # instance id -> (source, destination) names
        self._hinted: set[str] = set()  # instance ids whose progress is read at the next pass
        self.events = EventCounts()

    async def step(self) -> None:
        jobs = await self._jobs()
        gate(jobs)
        self._ports = ports_for(jobs)
        streaming = {j.migration.id for j in jobs if j.state in (_S.RUNNING, _S.POSTCOPY)}
        self._read_at = {k: v for k, v in self._read_at.items() if k in streaming}
        self.track(jobs)
        self._busy = {ident: task for ident, task in self._busy.items() if not task.done()}
        started = []
        for job in jobs:
            if job.migration.id in self._busy:
                continue  # its previous step still waits for an agent
            task = asyncio.create_task(self._drive(job), name=f"migration-{job.migration.id[:8]}")
            self._busy[job.migration.id] = task
            started.append(task)
        if started:
            await asyncio.wait(started, timeout=self.straggle_s)

    async def close(self) -> None:
        """Cancel the steps still running (shutdown)."""
        for task in self._busy.values():
            task.cancel()
        await asyncio.gather(*self._busy.values(), return_exceptions=True)
        self._busy = {}

    def track(self, jobs: list[Job]) -> None:
        """The migrations in flight, which `hint` accepts events of (each pass, or a test)."""
        self._ends = {
            j.instance.id: (j.source.name, j.dest.name) for j in jobs if j.state.value in ACTIVE
        }
        self._hinted &= self._ends.keys()

    def hint(self, host: str, instance_ids: list[str]) -> int:
        """Mark these guests' migrations for a reading; those of migrations in flight with
        `host` at either end count (others are unknown here, or over). Returns that count."""
        hinted = {i for i in instance_ids if host in self._ends.get(i, ())}
        self._hinted |= hinted
        self.events.received += len(instance_ids)
        self.events.accepted += len(hinted)
        return len(hinted)

    def _due(self, job: Job) -> bool:
        """Whether the migration's progress is due for a reading (see `poll_s` and `hint`)."""
        now = time.monotonic()
        hinted = job.instance.id in self._hinted
        if not hinted and now - self._read_at.get(job.migration.id, -math.inf) < self.poll_s:
            return False
        if hinted:
            self._hinted.discard(job.instance.id)
            self.events.readings += 1
        self._read_at[job.migration.id] = now
        return True

    async def _jobs(self) -> list[Job]:
        """Active migrations, and finished ones that left a copy behind."""
        query = select(Migration).where(
            or_(Migration.state.in_(ACTIVE), Migration.leftover.is_not(None))
        )
        async with self.store.reading() as session:
            migrations = (await session.scalars(query)).all()
            moving = {m.instance_id for m in migrations if m.state in ACTIVE}
            # What the jobs need, in one query per table (ports come with the instances).
            instances = await _instances(session, {m.instance_id for m in migrations})
            ends = {m.source_host_id for m in migrations}
            hosts = await _hosts(
                session, ends | {m.dest_host_id for m in migrations if m.dest_host_id}
            )
            streams = await _streams(session, {m.drain_id for m in migrations if m.drain_id})
            jobs = []
            for m in migrations:
                instance = instances.get(m.instance_id)
                source = hosts.get(m.source_host_id)
                dest = hosts.get(m.dest_host_id) if m.dest_host_id else None
                again = m.state not in ACTIVE and m.instance_id in moving
                if instance and source and dest:
                    limit = streams.get(m.drain_id) if m.drain_id else None
                    jobs.append(Job(m, instance, source, dest, again, limit))
        return jobs

    async def _drive(self, job: Job) -> None:
        try:
            try:
                await self._advance(job)
            except AgentUnavailable as exc:
                await self._recover(job, str(exc))
        except Exception:
            log.exception("migration %s: step failed; retrying next pass", job.migration.id)

    async def _advance(self, job: Job) -> None:
        state = job.state
        if job.migration.leftover is not None and state.value not in ACTIVE:
            await self._clean_up(job)
        elif job.migration.cancel_requested and state in CANCELLABLE:
            await self._cancel(job)
        elif state is _S.SCHEDULED:
            await self._prepare(job)
            if job.state is _S.PREPARING and job.may_stream and not job.migration.cancel_requested:
                await self._start(job)  # the destination listens: start in the same pass
        elif state is _S.PREPARING and job.may_stream:
            await self._start(job)
        elif state in (_S.RUNNING, _S.POSTCOPY):
            if self._due(job):
                await self._monitor(job)
        elif state is _S.SWITCHING:
            await self._switch(job)

    # -- steps -----------------------------------------------------------------------------

    async def _prepare(self, job: Job) -> None:
        port = job.migration.dest_port or self._ports.get(job.migration.id)
        if port is None:
            return  # every migration port of the destination is held: a later pass
        if job.migration.dest_port is None:
            # Recorded before the destination listens: a retry of this step (after a failed
            # call, or a restart) asks for the same port, which the agent may hold already.
            await self._update(job, None, None, "", dest_port=port)
        spec = guest_spec(job.instance)
        await self.agents.incoming(
            self._url(job.dest), IncomingIn(spec=spec, port=port, params=job.params())
        )
        await self._update(
            job,
            MigrationAction.PREPARE,
            EventKind.MIGRATION_PREPARING,
            f"{job.dest.name} is ready to receive {job.name} on {port}",
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
            f"{job.name} streaming from {job.source.name} to {job.dest.name} over TLS",
            started_at=utcnow(),
            progress_at=utcnow(),
        )

    async def _monitor(self, job: Job) -> None:
        progress = await self.agents.progress(self._url(job.source), job.instance.id)
        await self._store_progress(job, progress)
        if progress.status == "completed":
            if job.state is _S.RUNNING:
                await self._update(job, MigrationAction.SWITCHOVER, None, "")
            await self._switch(job)
        elif progress.status in ("failed", "cancelled", "none"):
            await self._unwind(
                job,
                MigrationAction.FAIL,
                progress.error or f"the source reports the migration {progress.status}",
            )
        elif job.state is _S.RUNNING:
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
            await self._escalate(job, progress)

    async def _escalate(self, job: Job, progress: MigrationProgressOut) -> None:
        policy = job.policy
        current = job.migration.downtime_limit_ms or policy.downtime_ladder_ms[0]
        step = policy.next_downtime(current)
        if step is None:
            return
        await self.agents.tune(
            self._url(job.source), job.instance.id, TuneIn(downtime_limit_ms=step)
        )
        await self._update(
            job,
            None,
            EventKind.MIGRATION_ESCALATED,
            f"{job.name}: {progress.passes} passes without converging; "
            f"downtime limit {current} -> {step} ms",
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
                f"{job.name} {why}: switched to post-copy",
            )
        else:
            await self._unwind(job, MigrationAction.FAIL, f"{why}; aborted by policy")

    async def _switch(self, job: Job) -> None:
        """Destination runs it, source copy removed, then the record: each call idempotent, so
        a pass cut short anywhere is repeated. A source that cannot be cleaned up now does not
        hold the move back: it is committed with the source as a leftover."""
        await self.agents.finish_destination(self._url(job.dest), job.instance.id)
        trouble = await self._attempt(
            lambda: self.agents.finish_source(self._url(job.source), job.instance.id)
        )
        await self._complete(job, trouble)

    async def _cancel(self, job: Job) -> None:
        try:
            await self._unwind(job, MigrationAction.CANCEL, "aborted on request")
        except AgentUnavailable:
            if job.state is not _S.RUNNING:
                raise
            # The source would not abort: it handed over already, or its agent is away.
            await self._monitor(job)

    # -- when an agent does not answer as expected -----------------------------------------

    async def _recover(self, job: Job, trouble: str) -> None:
        """A step failed at an agent. Before streaming, unwind (or, when the source no longer
        runs the guest, fail it as lost); from then on, ask both ends where the instance runs
        and act on `judge`'s finding, or wait with the reason shown."""
        if job.state.value not in ACTIVE:
            return  # a leftover removal: retried next pass
        log.debug("migration %s: %s", job.migration.id, trouble)
        if job.state in STREAMING:
            finding = await self._find(job)
        else:
            finding = await self._before_stream(job, trouble)
        try:
            await self._act(job, finding)
        except AgentUnavailable as exc:
            await self._wait(job, f"{finding.reason}; {exc}")

    async def _before_stream(self, job: Job, trouble: str) -> Finding:
        """Nothing was sent yet: the source keeps the guest, unless it does not run it any more
        (its QEMU died). Then the instance is lost there, and is said so at once: a drain moves
        it cold instead of trying it live on one destination after another."""
        source = await self._sight(job.source, job)
        if source.lacks:
            return Finding(Verdict.LOST, f"the source does not run it ({source}): {trouble}")
        return Finding(Verdict.STAYED, trouble)

    async def _find(self, job: Job) -> Finding:
        source, dest = await asyncio.gather(
            self._sight(job.source, job), self._sight(job.dest, job)
        )
        m = job.migration
        last = m.progress_at or m.started_at or m.created_at
        waited = (utcnow() - last).total_seconds()
        return judge(job.state, source, dest, waited, job.policy.no_progress_s)

    async def _sight(self, host: Host, job: Job) -> Sighting:
        try:
            guest = await self.agents.guest(self._url(host), job.instance.id)
        except AgentUnavailable as exc:
            return Sighting(host.name, trouble=str(exc))
        if guest is None:
            return Sighting(host.name)
        return Sighting(host.name, guest.power, arrived=guest.detail == ARRIVED_DETAIL)

    async def _act(self, job: Job, finding: Finding) -> None:
        if finding.verdict is Verdict.MOVED:
            await self._switch(job)
        elif finding.verdict is Verdict.STAYED:
            cancel = job.migration.cancel_requested and job.state in CANCELLABLE
            action = MigrationAction.CANCEL if cancel else MigrationAction.FAIL
            await self._unwind(job, action, finding.reason)
        elif finding.verdict is Verdict.LOST:
            await self._lose(job, finding.reason)
        else:
            await self._wait(job, finding.reason)

    async def _unwind(self, job: Job, action: MigrationAction, why: str) -> None:
        """Source keeps running the guest, destination cleaned, claim released. While streaming,
        only once the source confirmed the abort: otherwise the guest may have moved. Before,
        either end's confirmation stops a stream that may have begun (no target, no landing)."""
        source_trouble = await self._attempt(
            lambda: self.agents.abort(self._url(job.source), job.instance.id, source=True)
        )
        if source_trouble is not None and job.state in STREAMING:
            raise AgentUnavailable(f"{job.source.name} could not abort: {source_trouble}")
        dest_trouble = await self._attempt(
            lambda: self.agents.abort(self._url(job.dest), job.instance.id, source=False)
        )
        if source_trouble is not None and dest_trouble is not None and job.state is _S.PREPARING:
            raise AgentUnavailable(f"neither end could abort: {source_trouble}; {dest_trouble}")
        leftover = (DESTINATION, dest_trouble) if dest_trouble is not None else None
        await self._close(job, action, why, leftover=leftover)

    async def _lose(self, job: Job, why: str) -> None:
        """Neither end runs the guest: the migration failed and so did the instance."""
        trouble = await self._attempt(
            lambda: self.agents.abort(self._url(job.dest), job.instance.id, source=False)
        )
        leftover = (DESTINATION, trouble) if trouble is not None else None
        await self._close(job, MigrationAction.FAIL, why, leftover=leftover, lost=True)

    async def _wait(self, job: Job, reason: str) -> None:
        """Show why the migration cannot go on: in its `error`, and one event per new reason."""
        async with self.store.write() as session:
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

    async def _clean_up(self, job: Job) -> None:
        """Retry removing the copy a finished migration left behind, until its agent answers:
        the paused source of a completed move, or the incoming target of an unwound one."""
        if job.moving_again:
            return  # the newer migration may own that end's copy now: after it
        completed = job.migration.leftover == SOURCE
        host = job.source if completed else job.dest
        if job.instance.host_id == host.id:  # it moved back there since: nothing stale
            await self._cleaned(job, f"{job.name} lives on {host.name} again; nothing to remove")
            return
        if completed:
            trouble = await self._attempt(
                lambda: self.agents.finish_source(self._url(host), job.instance.id)
            )
        else:
            trouble = await self._attempt(
                lambda: self.agents.abort(self._url(host), job.instance.id, source=False)
            )
        if trouble is not None:
            log.debug("migration %s: %s keeps a copy: %s", job.migration.id, host.name, trouble)
            return
        await self._cleaned(job, f"{host.name} no longer holds a copy of {job.name}")

    # -- records ---------------------------------------------------------------------------

    async def _complete(self, job: Job, source_trouble: str | None) -> None:
        """The destination runs the guest: the instance, its claims and the record follow."""
        async with self.store.write() as session:
            m = await session.get(Migration, job.migration.id)
            instance = await session.get(Instance, job.instance.id)
            if m is None or instance is None or MigrationState(m.state) not in STREAMING:
                return
            if m.state == _S.RUNNING:
                advance(m, MigrationAction.SWITCHOVER)
            advance(m, MigrationAction.COMPLETE)
            m.finished_at, m.error = utcnow(), None
            await self._move_claims(session, m, instance, job)
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
                self._leave(session, m, job, SOURCE, source_trouble)

    @staticmethod
    async def _move_claims(
        session: AsyncSession, m: Migration, instance: Instance, job: Job
    ) -> None:
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

    async def _close(
        self,
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
                f"migration of {job.name} to {job.dest.name} {m.state}: {why}",
                host=job.source.name,
                instance_id=job.instance.id,
                migration_id=m.id,
                data={"error": why},
            )
            if leftover is not None:
                self._leave(session, m, job, *leftover)
            instance = await session.get(Instance, job.instance.id)
            if lost and instance is not None and instance.state == InstanceState.RUNNING:
                InstanceService.mark_error(session, instance, job.source.name, why)

    @staticmethod
    def _leave(session: AsyncSession, m: Migration, job: Job, end: str, why: str) -> None:
        host = job.source if end == SOURCE else job.dest
        m.leftover = end
        note = f"{host.name} still holds a copy of {job.name}; removing it when it answers: {why}"
        if m.state == _S.COMPLETED:
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

    async def _cleaned(self, job: Job, message: str) -> None:
        async with self.store.write() as session:
            m = await session.get(Migration, job.migration.id)
            if m is None or m.leftover is None:
                return
            host = job.source if m.leftover == SOURCE else job.dest
            m.leftover = None
            if m.state == _S.COMPLETED:
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
            if p.total_time_ms is not None:
                m.total_time_ms = p.total_time_ms
            if m.state in ACTIVE:
                m.error = None  # the source reports again: nothing to wait for
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
    async def _attempt(call: Callable[[], Awaitable[object]]) -> str | None:
        """Run one agent call: None when it succeeded, else why not."""
        try:
            await call()
        except AgentUnavailable as exc:
            return str(exc)
        return None

    @staticmethod
    def _url(host: Host) -> str:
        if not host.agent_url:
            raise AgentUnavailable(f"host {host.name} has no agent API")
        return host.agent_url
