"""The reconcile loop: woken by commits, but never more than one pass per `min_gap`."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

from ferry.orchestrator.loop import ReconcileLoop
from ferry.services.store import EventBus


async def test_a_burst_of_commits_costs_a_few_passes_not_one_each() -> None:
    bus = EventBus()
    passes: list[float] = []
    clock = asyncio.get_running_loop()

    async def step() -> None:
        passes.append(clock.time())

    loop = ReconcileLoop("test", step, interval=10.0, bus=bus, min_gap=0.1)
    task = asyncio.create_task(loop.run())
    for _ in range(50):  # 50 commits over 0.25 s
        bus.notify()
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.15)
    loop.stop()
    await asyncio.wait_for(task, 1.0)
    assert 2 <= len(passes) <= 5, passes
    gaps = [b - a for a, b in itertools.pairwise(passes)]
    assert all(gap >= 0.095 for gap in gaps), gaps


async def test_a_commit_after_the_gap_still_wakes_the_loop_at_once() -> None:
    bus = EventBus()
    passes = 0

    async def step() -> None:
        nonlocal passes
        passes += 1

    loop = ReconcileLoop("test", step, interval=10.0, bus=bus, min_gap=0.01)
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.05)
    assert passes == 1  # the first pass, then waiting for the interval
    bus.notify()
    await asyncio.sleep(0.05)
    assert passes == 2
    loop.stop()
    await asyncio.wait_for(task, 1.0)


def test_the_gap_defaults_to_a_tenth_of_the_interval() -> None:
    async def step() -> None:
        return None

    assert ReconcileLoop("test", step, interval=1.0).min_gap == 0.1
    assert ReconcileLoop("test", step, interval=1.0, min_gap=0.0).min_gap == 0.0


async def test_wake_runs_this_loop_alone_at_once() -> None:
    """`wake()` (an agent's migration event) asks one loop for a pass; the bus's other
    listeners stay asleep until their interval."""
    bus = EventBus()
    passes = {"migrations": 0, "drains": 0}

    def counting(name: str) -> Callable[[], Awaitable[None]]:
        async def step() -> None:
            passes[name] += 1

        return step

    woken = ReconcileLoop("migrations", counting("migrations"), 10.0, bus, min_gap=0.01)
    other = ReconcileLoop("drains", counting("drains"), 10.0, bus, min_gap=0.01)
    tasks = [asyncio.create_task(loop.run()) for loop in (woken, other)]
    await asyncio.sleep(0.05)
    assert passes == {"migrations": 1, "drains": 1}
    woken.wake()
    await asyncio.sleep(0.05)
    assert passes == {"migrations": 2, "drains": 1}
    woken.wake()  # twice before the pass: one pass
    woken.wake()
    await asyncio.sleep(0.05)
    assert passes == {"migrations": 3, "drains": 1}
    for loop in (woken, other):
        loop.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 1.0)


async def test_a_wake_during_a_pass_brings_another_pass() -> None:
    """A wake that comes while a pass runs was possibly not seen by it: one more pass follows."""
    passes = 0
    loop: ReconcileLoop

    async def step() -> None:
        nonlocal passes
        passes += 1
        if passes == 2:
            loop.wake()  # as if an event came in the middle of this pass

    loop = ReconcileLoop("test", step, interval=10.0, min_gap=0.01)
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.05)
    loop.wake()
    await asyncio.sleep(0.1)
    assert passes == 3
    loop.stop()
    await asyncio.wait_for(task, 1.0)
