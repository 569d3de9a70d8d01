"""A steady load of API reads: requests started at a fixed rate (open loop), whatever the
answers' pace, cycling through a mix of the reads operators and dashboards make. Each latency is
counted in the phase its request started in, under the request's label.

The rate does not bend to the server: a slower controller meets the same requests, so latencies
under a drain compare with latencies without one. When `max_in_flight` requests are waiting
already, the next ones are counted as skipped instead of piling up without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field

import httpx

from ferry.bench.scale_stats import latency_summary

ALL = "all"


@dataclass(frozen=True)
class Read:
    label: str
    path: str


def read_mix(
    hosts: list[str], watched: list[str], instances: list[str], *, full_list: bool = True
) -> list[Read]:
    """One tour of the mix, about 20 requests: the host list once, a host's instances, a host,
    a watched (drained) host's maintenance status and an instance several times each, and (when
    `full_list`) the whole instance list once. Tours rotate over hosts and instances."""
    return [
        Read("GET /v1/hosts", "/v1/hosts"),
        *([Read("GET /v1/instances", "/v1/instances")] if full_list else []),
        *[Read("GET /v1/instances?host=H", f"/v1/instances?host={h}") for h in hosts[:6]],
        *[Read("GET /v1/hosts/H", f"/v1/hosts/{h}") for h in hosts[6:9]],
        *[Read("GET /v1/hosts/H/maintenance", f"/v1/hosts/{h}/maintenance") for h in watched[:4]],
        *[Read("GET /v1/instances/NAME", f"/v1/instances/{n}") for n in instances[:6]],
    ]


FULL_LIST_EVERY = 10  # tours: the whole instance list is a bulk read (20,000 at full size)


def reads(hosts: list[str], watched: list[str], instances: list[str], tour: int) -> list[Read]:
    """The `tour`-th tour: the same mix over the next hosts, drained hosts and instances; the
    whole instance list in one tour of `FULL_LIST_EVERY`."""

    def window(names: list[str], size: int) -> list[str]:
        if not names:
            return []
        start = tour * size
        return [names[(start + i) % len(names)] for i in range(size)]

    full = tour % FULL_LIST_EVERY == 0
    return read_mix(window(hosts, 9), window(watched, 4), window(instances, 6), full_list=full)


@dataclass
class ReadLoad:
    api: httpx.AsyncClient
    hosts: list[str]
    watched: list[str]
    instances: list[str]
    rate: float  # requests per second
    max_in_flight: int = 64
    phase: str = "warm-up"
    latencies: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="read-load")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        gap, started, count, tour = 1.0 / self.rate, loop.time(), 0, 0
        while True:
            for read in reads(self.hosts, self.watched, self.instances, tour):
                due = started + count * gap
                count += 1
                await asyncio.sleep(max(0.0, due - loop.time()))
                if len(self._tasks) >= self.max_in_flight:
                    self.skipped[self.phase] += 1
                    continue
                task = asyncio.create_task(self._one(read, self.phase, due))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            tour += 1

    async def _one(self, read: Read, phase: str, due: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            response = await self.api.get(read.path)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        if not ok:
            self.errors[phase] += 1
            return
        elapsed_ms = (loop.time() - due) * 1000
        self.latencies[phase][read.label].append(elapsed_ms)
        self.latencies[phase][ALL].append(elapsed_ms)

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def summary(self, phase: str) -> dict[str, dict[str, float]]:
        """Per label (and `all`): count, p50, p99, max in ms."""
        return {label: latency_summary(v) for label, v in sorted(self.latencies[phase].items())}
