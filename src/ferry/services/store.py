"""Transactions that wake event listeners (SSE streams, reconcile loops) once they commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from ferry.db.database import Database
from ferry.db.models import Event
from ferry.domain.errors import Conflict
from ferry.domain.events import EventKind
from ferry.wakeup import Wakeup


class EventBus(Wakeup):
    """In-process wake-up signal: the controller is the only writer, so every committed change
    passes through here. Listeners take `current()` before they read, then `wait()` on it, so no
    notification between their read and their wait is lost."""


class Store:
    def __init__(self, db: Database, bus: EventBus) -> None:
        self.db = db
        self.bus = bus

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        flushed = False

        def _flushed(*_args: Any) -> None:
            nonlocal flushed
            flushed = True

        try:
            async with self.db.writing() as session:
                event.listen(session.sync_session, "after_flush", _flushed)
                yield session
                changed = flushed or bool(session.new or session.dirty or session.deleted)
        except StaleDataError as exc:
            raise Conflict("the record changed while this request ran; try again") from exc
        # Only a transaction that wrote something wakes listeners: a reconcile pass that finds
        # nothing to do must not wake itself (or it would spin without pause).
        if changed:
            self.bus.notify()

    def reading(self) -> Any:
        return self.db.reading()


def record(
    session: AsyncSession,
    kind: EventKind,
    actor: str,
    message: str,
    *,
    host: str | None = None,
    drain_id: str | None = None,
    instance_id: str | None = None,
    migration_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> Event:
    """Add an event to the caller's transaction: it commits with the change it describes."""
    event = Event(
        kind=kind.value,
        actor=actor,
        message=message,
        host=host,
        drain_id=drain_id,
        instance_id=instance_id,
        migration_id=migration_id,
        data=data or {},
    )
    session.add(event)
    return event
