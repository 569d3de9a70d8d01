"""What every migration step uses: the store, the agents, and the record that a step happened."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ferry.agent_client import AgentClient, AgentUnavailable
from ferry.db.models import Host, Migration
from ferry.domain.events import EventKind
from ferry.domain.migration import MigrationAction
from ferry.orchestrator.migration.jobs import Job
from ferry.services.migrations import advance
from ferry.services.store import Store, record


@dataclass(frozen=True)
class Context:
    store: Store
    agents: AgentClient

    async def update(
        self,
        job: Job,
        action: MigrationAction | None,
        kind: EventKind | None,
        message: str,
        **fields: object,
    ) -> None:
        """One step's record: its transition (if any), its fields, its event (if any)."""
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
    async def attempt(call: Callable[[], Awaitable[object]]) -> str | None:
        """Run one agent call: None when it succeeded, else why not."""
        try:
            await call()
        except AgentUnavailable as exc:
            return str(exc)
        return None

    @staticmethod
    def url(host: Host) -> str:
        if not host.agent_url:
            raise AgentUnavailable(f"host {host.name} has no agent API")
        return host.agent_url
