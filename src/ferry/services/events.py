"""Reading the event log: filtered pages and a live tail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, or_, select

from ferry.db.models import Event
from ferry.services.store import Store

MAX_PAGE = 1000
MAX_EVENT_ID = 2**63 - 1  # the largest id any SQL database here can hold


@dataclass(frozen=True)
class EventFilter:
    kinds: tuple[str, ...] = ()
    host: str | None = None
    actor: str | None = None
    drain_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _filtered(flt: EventFilter) -> Select[Event]:
    query = select(Event)
    if flt.kinds:
        # A kind matches itself and everything below it: 'host.maintenance' matches
        # 'host.maintenance.entered'.
        query = query.where(
            or_(
                *(
                    (Event.kind == kind) | Event.kind.startswith(kind + ".", autoescape=True)
                    for kind in flt.kinds
                )
            )
        )
    if flt.host is not None:
        query = query.where(Event.host == flt.host)
    if flt.actor is not None:
        query = query.where(Event.actor == flt.actor)
    if flt.drain_id is not None:
        query = query.where(Event.drain_id == flt.drain_id)
    if flt.since is not None:
        query = query.where(Event.at >= flt.since)
    if flt.until is not None:
        query = query.where(Event.at < flt.until)
    return query


class EventService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def page(
        self,
        flt: EventFilter,
        *,
        before: int | None,
        after: int | None,
        limit: int,
        ascending: bool,
    ) -> list[Event]:
        query = _filtered(flt)
        if before is not None:
            query = query.where(Event.id < before)
        if after is not None:
            query = query.where(Event.id > after)
        query = query.order_by(Event.id.asc() if ascending else Event.id.desc())
        async with self.store.reading() as session:
            return list((await session.scalars(query.limit(min(limit, MAX_PAGE)))).all())

    async def last_id(self) -> int:
        async with self.store.reading() as session:
            return await session.scalar(select(Event.id).order_by(Event.id.desc()).limit(1)) or 0

    async def tail(
        self, flt: EventFilter, after: int, *, idle_timeout: float = 5.0
    ) -> AsyncIterator[Event]:
        """Every matching event with id > `after`, as it is committed. Never ends by itself."""
        cursor = after
        while True:
            seen = self.store.bus.current()
            events = await self.page(flt, before=None, after=cursor, limit=MAX_PAGE, ascending=True)
            for event in events:
                cursor = event.id
                yield event
            if not events:
                # Woken by the next commit; the timeout covers writers in other processes.
                await self.store.bus.wait(seen, idle_timeout)
