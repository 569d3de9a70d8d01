"""A wake-up signal for asyncio waiters that must not miss a notification.

A waiter takes `current()` before it reads the state it cares about, then `wait()`s on it: a
`notify()` between the read and the wait has already set that event, so the wait returns at
once. Each `notify()` sets the current event and replaces it with a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib


class Wakeup:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    @staticmethod
    async def wait(seen: asyncio.Event, seconds: float) -> None:
        """Until `seen` is set or `seconds` passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await seen.wait()
