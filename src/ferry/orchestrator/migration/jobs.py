"""The migrations a pass drives (`Job`: a migration with its instance and both hosts, loaded in
one query per table), and the pass-wide decisions made before any step: which prepared drain
migrations may start streaming (`gate`) and which ports the new ones listen on (`ports_for`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Drain, Host, Instance, Migration
from ferry.domain.convergence import ConvergencePolicy
from ferry.domain.drain_policy import DrainPolicy
from ferry.domain.migration import MigrationState
from ferry.orchestrator.migration.ports import assign_ports, disk_port
from ferry.protocol import MigrationParamsIn
from ferry.services.migrations import ACTIVE
from ferry.services.placement import disk_pool_of
from ferry.services.store import Store

MIB = 2**20

_S = MigrationState
STREAMING = (_S.RUNNING, _S.POSTCOPY, _S.SWITCHING)  # the source may have sent the guest
CANCELLABLE = (_S.SCHEDULED, _S.PREPARING, _S.RUNNING)  # nothing handed over yet
SOURCE, DESTINATION = "source", "destination"


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

    @property
    def copies_disk(self) -> bool:
        """The instance's disk is on its host's local storage: a copy moves with it."""
        return disk_pool_of(self.instance) == ""

    @property
    def disk_port(self) -> int | None:
        """The destination's NBD port of a disk copy (None: nothing to copy, or no port yet)."""
        port = self.migration.dest_port
        return disk_port(port) if self.copies_disk and port is not None else None

    def timeout_s(self) -> float:
        """The completion timeout: the policy's per-GiB rule over the RAM and the disk's bytes
        to copy (as far as the copy has said them)."""
        disk_mib = (self.migration.disk_bytes_total or 0) // MIB
        return self.policy.timeout_s(self.instance.ram_mb + disk_mib)

    def params(self) -> MigrationParamsIn:
        policy = self.policy
        return MigrationParamsIn(
            max_bandwidth_bytes=policy.max_bandwidth_mib * MIB,
            downtime_limit_ms=self.migration.downtime_limit_ms or policy.downtime_ladder_ms[0],
            auto_converge=policy.auto_converge,
            postcopy=policy.postcopy,
        )


# -- loading -----------------------------------------------------------------------------------


async def load_jobs(store: Store) -> list[Job]:
    """Active migrations, and finished ones that left a copy behind."""
    query = select(Migration).where(
        or_(Migration.state.in_(ACTIVE), Migration.leftover.is_not(None))
    )
    async with store.reading() as session:
        migrations = (await session.scalars(query)).all()
        moving = {m.instance_id for m in migrations if m.state in ACTIVE}
        # What the jobs need, in one query per table (ports come with the instances).
        instances = await _instances(session, {m.instance_id for m in migrations})
        ends = {m.source_host_id for m in migrations}
        hosts = await _hosts(session, ends | {m.dest_host_id for m in migrations if m.dest_host_id})
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


# -- decisions for the whole pass --------------------------------------------------------------


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
