"""Forwards the driver's migration events to the controller, which then reads the migration's
progress at once instead of at its next poll (the poll stays: events only make it sooner).

Events are coalesced per guest (the latest wins: the controller reads the state itself, the event
only says when) and sent by one task, in one request for all that came while the previous one was
on its way. An event the controller cannot take is dropped with a warning: nothing depends on it
arriving, the controller's poll reads the same state a moment later.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from ferry.agent.drivers.base import MigrationEvent
from ferry.protocol import MigrationEventIn, MigrationEvents

log = logging.getLogger(__name__)
MAX_BATCH = 1000  # MigrationEvents' limit


class EventForwarder:
    def __init__(self, client: httpx.AsyncClient, host: str) -> None:
        self.client = client
        self.host = host
        self.sent = 0
        self.dropped = 0
        self._pending: dict[str, MigrationEvent] = {}
        self._ready = asyncio.Event()

    def notify(self, event: MigrationEvent) -> None:
        """The driver's event sink: never blocks."""
        self._pending[event.instance_id] = event
        self._ready.set()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                batch = list(self._pending.values())[:MAX_BATCH]
                for event in batch:
                    del self._pending[event.instance_id]
                await self._send(batch)

    async def _send(self, batch: list[MigrationEvent]) -> None:
        body = MigrationEvents(
            events=[
                MigrationEventIn(instance_id=e.instance_id, status=e.status, passes=e.passes)
                for e in batch
            ]
        )
        try:
            response = await self.client.post(
                f"/v1/agent/hosts/{self.host}/migration-events", json=body.model_dump()
            )
            response.raise_for_status()
            self.sent += len(batch)
        except httpx.HTTPError as exc:
            self.dropped += len(batch)
            log.warning("%d migration event(s) not forwarded: %s", len(batch), exc)
