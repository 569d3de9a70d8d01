"""A periodic, wakeable reconcile loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ferry.services.store import EventBus

log = logging.getLogger(__name__)


class ReconcileLoop:
    """Runs `step` every `interval` seconds, and sooner when the event bus signals a change.
    `stop()` lets a pass in progress finish its transaction, then ends the loop."""

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        interval: float,
        bus: EventBus | None = None,
    ) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.bus = bus
        self.passes = 0
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            seen = self.bus.current() if self.bus else asyncio.Event()
            try:
                await self.step()
            except Exception:
                log.exception("reconcile loop %s: pass failed; retrying", self.name)
            self.passes += 1
            await self._pause(seen)

    async def _pause(self, changed: asyncio.Event) -> None:
        waits = [
            asyncio.ensure_future(changed.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    def stop(self) -> None:
        self._stopping.set()
