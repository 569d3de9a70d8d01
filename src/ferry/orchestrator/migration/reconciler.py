"""MigrationReconciler: one pass over every migration in flight, each migration's next step a
task of its own (the steps themselves live in one module per phase; see the package)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from ferry.agent_client import AgentClient, AgentUnavailable
from ferry.domain.migration import MigrationState
from ferry.orchestrator.migration.context import Context
from ferry.orchestrator.migration.jobs import CANCELLABLE, Job, gate, load_jobs, ports_for
from ferry.orchestrator.migration.leftovers import clean_up
from ferry.orchestrator.migration.recovery import recover
from ferry.orchestrator.migration.stream import cancel, monitor, prepare, start
from ferry.orchestrator.migration.switch import switch
from ferry.services.migrations import ACTIVE
from ferry.services.store import Store

log = logging.getLogger(__name__)

_S = MigrationState
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
        self._ctx = Context(store, agents)
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
        return await load_jobs(self.store)

    async def _drive(self, job: Job) -> None:
        try:
            try:
                await self._advance(job)
            except AgentUnavailable as exc:
                await recover(self._ctx, job, str(exc))
        except Exception:
            log.exception("migration %s: step failed; retrying next pass", job.migration.id)

    async def _advance(self, job: Job) -> None:
        """The migration's next step, from its state (one phase's module each)."""
        ctx, state = self._ctx, job.state
        if job.migration.leftover is not None and state.value not in ACTIVE:
            await clean_up(ctx, job)
        elif job.migration.cancel_requested and state in CANCELLABLE:
            await cancel(ctx, job)
        elif state is _S.SCHEDULED:
            await prepare(ctx, job, self._ports.get(job.migration.id))
            if job.state is _S.PREPARING and job.may_stream and not job.migration.cancel_requested:
                await start(ctx, job)  # the destination listens: start in the same pass
        elif state is _S.PREPARING and job.may_stream:
            await start(ctx, job)
        elif state in (_S.RUNNING, _S.POSTCOPY):
            if self._due(job):
                await monitor(ctx, job)
        elif state is _S.SWITCHING:
            await switch(ctx, job)
