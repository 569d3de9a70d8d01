"""Webhook delivery: one task per enabled subscription, each reading the events after its
persisted cursor from the database (level-triggered, so a restart resumes where it stopped and
nothing is lost; delivery is at least once) and POSTing them in id order, with a deadline per
request and exponential backoff between attempts. An event that fails its last attempt is
dropped, counted and recorded, so one bad event cannot hold a subscription back for ever.

Tasks run beside the reconcile loops and never inside their transactions: a slow or dead receiver
delays only its own subscription. The bookkeeping writes (cursor, attempts, last error) wake no
listener; only a dropped event, which is recorded as an event, does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, cast

import httpx
from sqlalchemy import CursorResult, select, update

from ferry.db.models import Event, WebhookSubscription
from ferry.db.types import utcnow
from ferry.domain.events import SYSTEM_ACTOR, EventKind
from ferry.domain.webhooks import backoff
from ferry.services.store import Store, record
from ferry.services.webhooks import (
    Outcome,
    Target,
    client,
    cloudevent,
    encode,
    pending_events,
    post,
)

log = logging.getLogger(__name__)

BATCH = 100


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout: float = 10.0  # seconds for one request, connect to answer
    max_attempts: int = 8  # per event; then it is dropped
    backoff: float = 1.0  # seconds before the first retry, doubling ...
    backoff_max: float = 60.0  # ... up to this
    idle: float = 1.0  # seconds between reads when nothing wakes a task


class WebhookNotifier:
    """`step()` keeps one delivery task per enabled subscription (the controller runs it as a
    reconcile loop woken by every commit); `close()` ends them all."""

    def __init__(self, store: Store, policy: DeliveryPolicy) -> None:
        self.store = store
        self.policy = policy
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    async def step(self) -> None:
        async with self.store.reading() as session:
            subs = (
                await session.scalars(
                    select(WebhookSubscription).where(WebhookSubscription.enabled.is_(True))
                )
            ).all()
        wanted = {sub.id for sub in subs}
        for sub_id, task in list(self._workers.items()):
            if sub_id not in wanted or task.done():
                del self._workers[sub_id]
                self._retire(task)
        for sub in subs:
            if sub.id not in self._workers:
                target = Target.of(sub)
                self._workers[sub.id] = asyncio.create_task(
                    self._serve(target), name=f"webhook {sub.name}"
                )

    def _retire(self, task: asyncio.Task[None]) -> None:
        if task.done():
            return
        task.cancel()
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        tasks = [*self._workers.values(), *self._retiring]
        self._workers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _serve(self, target: Target) -> None:
        async with client(self.policy.timeout) as http:
            while True:
                try:
                    if not await self._round(http, target):
                        return
                except Exception:
                    log.exception("webhook %s: delivery pass failed; retrying", target.name)
                    await asyncio.sleep(self.policy.idle)

    async def _round(self, http: httpx.AsyncClient, target: Target) -> bool:
        """Deliver what is pending, or wait for the next commit. False once the subscription
        is gone or disabled."""
        seen = self.store.bus.current()
        async with self.store.reading() as session:
            sub = await session.get(WebhookSubscription, target.id)
            if sub is None or not sub.enabled:
                return False
            failed = sub.attempts
            events = await pending_events(session, target.kinds, sub.cursor, BATCH)
        for event in events:
            if not await self._deliver(http, target, event, failed):
                return False
            failed = 0
        if not events:
            await self.store.bus.wait(seen, self.policy.idle)
        return True

    async def _deliver(
        self, http: httpx.AsyncClient, target: Target, event: Event, failed: int
    ) -> bool:
        """Try until delivered or dropped; `failed` attempts were made before (even before a
        restart). False if the subscription went away meanwhile."""
        body = encode(cloudevent(event))
        while True:
            outcome = await post(http, target, body, attempt=failed + 1, within=self.policy.timeout)
            if outcome.delivered:
                return await self._delivered(target, event, outcome)
            failed += 1
            if failed >= self.policy.max_attempts:
                return await self._dropped(target, event, outcome, failed)
            if not await self._failed(target, event, outcome, failed):
                return False
            await asyncio.sleep(backoff(failed, self.policy.backoff, self.policy.backoff_max))

    async def _bookkeep(self, target: Target, **values: Any) -> bool:
        """Update the subscription without waking anyone: no event, nothing for loops to do."""
        async with self.store.db.writing() as session:
            result = await session.execute(
                update(WebhookSubscription)
                .where(WebhookSubscription.id == target.id)
                .values(**values)
            )
            return cast(CursorResult[Any], result).rowcount == 1

    async def _delivered(self, target: Target, event: Event, outcome: Outcome) -> bool:
        return await self._bookkeep(
            target,
            cursor=event.id,
            attempts=0,
            delivered=WebhookSubscription.delivered + 1,
            last_status=outcome.status,
            last_delivery_at=utcnow(),
        )

    async def _failed(self, target: Target, event: Event, outcome: Outcome, failed: int) -> bool:
        log.info(
            "webhook %s: event %d attempt %d/%d failed: %s",
            target.name,
            event.id,
            failed,
            self.policy.max_attempts,
            outcome.error,
        )
        return await self._bookkeep(
            target,
            attempts=failed,
            last_status=outcome.status,
            last_error=(
                f"event {event.id} ({event.kind}) attempt {failed}/{self.policy.max_attempts}:"
                f" {outcome.error}"
            ),
            last_error_at=utcnow(),
        )

    async def _dropped(self, target: Target, event: Event, outcome: Outcome, failed: int) -> bool:
        message = (
            f"webhook {target.name} dropped event {event.id} ({event.kind}) after {failed}"
            f" attempts: {outcome.error}"
        )
        log.warning("%s", message)
        async with self.store.write() as session:
            result = await session.execute(
                update(WebhookSubscription)
                .where(WebhookSubscription.id == target.id)
                .values(
                    cursor=event.id,
                    attempts=0,
                    failures=WebhookSubscription.failures + 1,
                    last_status=outcome.status,
                    last_error=(
                        f"event {event.id} ({event.kind}) dropped after {failed} attempts:"
                        f" {outcome.error}"
                    ),
                    last_error_at=utcnow(),
                )
            )
            if cast(CursorResult[Any], result).rowcount != 1:
                return False
            record(
                session,
                EventKind.WEBHOOK_DROPPED,
                SYSTEM_ACTOR,
                message,
                data={
                    "webhook": target.name,
                    "event_id": event.id,
                    "kind": event.kind,
                    "attempts": failed,
                    "error": outcome.error,
                },
            )
        return True
