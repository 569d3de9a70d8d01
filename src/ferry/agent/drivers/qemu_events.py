"""QEMU's events, heard as they happen, on a second QMP monitor of each guest.

A guest's command monitor (qmp.sock) serves one client at a time, and the driver talks to it in
short sessions. QEMU sends its events to every monitor, so each guest also has an event monitor
(events.sock) that an `EventWatch` holds open from the first migration step on that host until
the QEMU process exits. The watch keeps what MIGRATION and MIGRATION_PASS said (status, passes),
hands each of them to the driver's event sink (the agent forwards them to the controller, which
reads the migration's progress at once instead of at its next poll), and wakes whoever waits for
the guest to change: any event does, so an arriving guest's RESUME counts too.

Events are a hint, never the record: every decision still rests on query-migrate and
query-status, so a lost event costs at most the waiter's fallback poll. A guest started before
its QEMU had an event monitor has none, and the driver polls it as it always did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from qemu.qmp import ConnectError, QMPClient, QMPError, Runstate
from qemu.qmp.qmp_client import NegotiationError

from ferry.agent.drivers.base import DriverError, MigrationEvent
from ferry.agent.drivers.qemu_mirror import MIRROR_JOB
from ferry.wakeup import Wakeup

log = logging.getLogger(__name__)
MIRROR_EVENTS = frozenset({"BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_ERROR"})

CONNECT_TIMEOUT = 5.0
NEGOTIATION_ATTEMPTS = 3


async def connect(instance_id: str, sock: str) -> QMPClient:
    """A negotiated QMP client. qemu.qmp wants the reply to qmp_capabilities as the first message
    after it, but QEMU enables events before it replies, so an event can come first (a MIGRATION
    event during a migration often does): that failed negotiation is retried."""
    for attempt in range(1, NEGOTIATION_ATTEMPTS + 1):
        client = QMPClient(f"ferry-agent-{instance_id[:8]}")
        try:
            await asyncio.wait_for(client.connect(sock), CONNECT_TIMEOUT)
            return client
        except (QMPError, OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raced = isinstance(exc, ConnectError) and isinstance(exc.exc, NegotiationError)
            if not raced or attempt == NEGOTIATION_ATTEMPTS:
                raise DriverError(f"cannot reach QMP of {instance_id}: {exc}") from exc
    raise AssertionError("unreachable")


class EventWatch:
    """The event monitor of one guest, listened to by a task of its own."""

    def __init__(
        self, instance_id: str, sock: Path, emit: Callable[[MigrationEvent], None]
    ) -> None:
        self.instance_id = instance_id
        self.sock = sock
        self._emit = emit
        self.status = "none"  # the last MIGRATION status heard
        self.passes = 0  # the last MIGRATION_PASS heard (reset when a migration sets up)
        self.heard = 0  # events of any kind
        # Set by any event, and when the watch ends. Take `changed.current()` before reading the
        # guest's state, then `changed.wait()` on it: an event in between is not lost.
        self.changed = Wakeup()
        self._task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Connected and listening when this returns: no later event is missed."""
        client = await connect(self.instance_id, str(self.sock))
        self._task = asyncio.create_task(
            self._listen(client), name=f"qmp-events-{self.instance_id[:8]}"
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self, client: QMPClient) -> None:
        reader = asyncio.ensure_future(self._consume(client))
        closed = asyncio.ensure_future(_until_closed(client))
        try:
            await asyncio.wait({reader, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, closed):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):  # the peer is gone, or we are cancelled
                await client.disconnect()
            self.changed.notify()  # waiters fall back to reading the guest's state

    async def _consume(self, client: QMPClient) -> None:
        async for message in client.events:
            data = message.get("data")
            self.hear(str(message.get("event", "")), data if isinstance(data, Mapping) else {})

    def hear(self, name: str, data: Mapping[str, Any]) -> None:
        """One event of QEMU's (`event`, `data` of the QMP message)."""
        self.heard += 1
        if name == "MIGRATION":
            self.status = str(data.get("status", "none"))
            if self.status == "setup":
                self.passes = 0
            self._emit(MigrationEvent(self.instance_id, self.status, self.passes))
        elif name == "MIGRATION_PASS":
            self.passes = int(data.get("pass", 0))
            self._emit(MigrationEvent(self.instance_id, self.status, self.passes))
        elif name in MIRROR_EVENTS and data.get("device") == MIRROR_JOB:
            # A disk copy in sync (the RAM may follow), ended, or failed: read it now.
            self._emit(MigrationEvent(self.instance_id, "mirroring", self.passes))
        self.changed.notify()


async def _until_closed(client: QMPClient) -> None:
    while client.runstate is Runstate.RUNNING:
        await client.runstate_changed()
