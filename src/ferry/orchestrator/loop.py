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
    `stop()` lets a pass in progress finish its transaction, then ends the loop.

    Passes start at least `min_gap` seconds apart (default: a tenth of the interval): a busy
    cluster commits many times a second, and without the gap every commit would cost every loop
    a pass. Commits during the gap are not lost: the next pass reads what they wrote. `wake()`
    asks this loop alone for a pass (news from outside the database, such as an agent's event)."""

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        interval: float,
        bus: EventBus | None = None,
        min_gap: float | None = None,
    ) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.bus = bus
        self.min_gap = interval / 10 if min_gap is None else min_gap
        self.passes = 0
        self._stopping = asyncio.Event()
        self._woken = asyncio.Event()

    async def run(self) -> None:
        clock = asyncio.get_running_loop()
        while not self._stopping.is_set():
            seen = self.bus.current() if self.bus else asyncio.Event()
            self._woken.clear()  # a wake() from here on is seen by this pass or the next
            started = clock.time()
            try:
                await self.step()
            except Exception:
                log.exception("reconcile loop %s: pass failed; retrying", self.name)
            self.passes += 1
            await self._pause([seen, self._woken])
            rest = started + self.min_gap - clock.time()
            if rest > 0:
                await self._pause([], rest)

    def wake(self) -> None:
        self._woken.set()

    async def _pause(self, changed: list[asyncio.Event], seconds: float | None = None) -> None:
        """Until one of `changed` is set, the loop is stopped, or `seconds` (the interval)
        passed."""
        waits = [
            *(asyncio.ensure_future(event.wait()) for event in changed),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        timeout = self.interval if seconds is None else seconds
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    def stop(self) -> None:
        self._stopping.set()
