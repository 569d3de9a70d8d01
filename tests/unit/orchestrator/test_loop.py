"""The reconcile loop: woken by commits, but never more than one pass per `min_gap`."""

from __future__ import annotations

import asyncio
import itertools

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
