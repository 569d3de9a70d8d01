"""`ferry bench scale`: the control plane at scale. A real controller process with `hosts`
simulated hosts (one fleet process serving each host's fake-driver agent over mutual TLS) and
`instances` instances; then `drains` hosts enter maintenance at once while a steady load of API
reads runs. Every figure is set against a baseline measured in the same run:

- API read latency (p50, p99, per kind of read and overall) during the drains, against the same
  read load with no drain running (measured first);
- controller CPU time (user + system, /proc/<pid>/stat) and SQL statements (`GET /v1/metrics`)
  per completed migration during the drains, against the same figures for a single host's drain
  (same drain policy, same read load). Both are given gross and net of the background: the rate
  measured in the read-only phase (heartbeats and reads, no drain) times the window's length;
- the drains' own time (each drain's record, enter to in_maintenance) against the single drain.

Phases, in order: setup (PKI, controller, fleet; all hosts up), seeding (instances pinned to
hosts round-robin and spread over networks of `PER_NETWORK` instances, through the API with a
few requests in flight; until every instance runs), idle (no reads: the heartbeats' cost alone),
reads without drain (the latency baseline), one drain (the per-migration baseline), `drains`
drains at once, then a check of the outcome against the controller and against every agent:
each drained host in maintenance and empty, each instance running on exactly one host, the one
the controller names.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from ferry.bench.scale_cluster import ClusterOptions, ScaleCluster, ScaleError, call
from ferry.bench.scale_load import ReadLoad
from ferry.bench.scale_stats import Sample, Usage

Say = Callable[[str], None]
FLAVOR, PREFIX = "scale", "host"
PER_NETWORK = 1000  # instances per network (a network's size sets the cost of an address)
NO_DRAIN, ONE_DRAIN, MANY_DRAINS = "no drain", "1 drain", "drains"
POLL_S = 0.25


@dataclass(frozen=True)
class ScaleOptions:
    hosts: int = 1000
    instances: int = 20_000
    drains: int = 20
    read_rate: float = 10.0  # API reads per second, in every measured phase
    idle_s: float = 10.0
    reads_s: float = 20.0
    seed_concurrency: int = 8
    instance_ram_mb: int = 1024
    host_vcpus: int = 64
    host_ram_mb: int = 262_144
    heartbeat_interval: float | None = None  # default: as `ferry lab up` sets it for `hosts`
    reconcile_interval: float = 1.0  # the controller's default
    max_bandwidth_mib: int = 1000
    drain_timeout_s: float = 1800.0

    @property
    def beat_s(self) -> float:
        """`ferry lab up`'s choice: about 20 heartbeats a second across the cluster."""
        return self.heartbeat_interval or float(max(2, self.hosts // 20))

    @property
    def policy(self) -> dict[str, Any]:
        """Each drain keeps its per-host limits (2 streams + 1 prepared ahead from its host);
        the cluster-wide cap admits all drains' streams at once, so they truly overlap."""
        return {
            "max_parallel": max(8, 3 * self.drains),
            "migration": {"max_bandwidth_mib": self.max_bandwidth_mib},
        }

    def check(self) -> None:
        if self.hosts < self.drains + 3:
            raise ScaleError(f"{self.drains} drains need at least {self.drains + 3} hosts")
        if self.instances < self.hosts:
            raise ScaleError("give every host an instance at least: --instances >= --hosts")
        per_host = math.ceil(self.instances / self.hosts)
        if per_host * 2 * self.instance_ram_mb > self.host_ram_mb:
            raise ScaleError(f"{per_host} instances of {self.instance_ram_mb} MiB per host leave "
                             "no room to drain into; add hosts or host RAM")  # fmt: skip


@dataclass
class DrainPhase:
    hosts: list[str]
    usage: Usage
    migrations: int  # completed
    attempts: int  # every migration record of these drains
    drain_s: list[float]  # each drain's record: created -> finished


@dataclass
class ScaleResult:
    options: ScaleOptions
    setup: dict[str, float]
    idle: Usage
    reads: Usage
    one: DrainPhase
    many: DrainPhase
    latency: dict[str, dict[str, dict[str, float]]]  # phase -> label -> summary
    read_errors: dict[str, int]
    read_skipped: dict[str, int]
    verification: dict[str, Any]
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)


def networks(instances: int) -> list[tuple[str, str]]:
    """Names and ranges of the instance networks: one per PER_NETWORK instances, as a cloud
    of that size has many (tenant) networks, not one flat one. Private ranges, never contacted.
    """
    count = max(1, math.ceil(instances / PER_NETWORK))
    return [(f"net{k}", str(ipaddress.ip_network(f"10.{k}.0.0/16"))) for k in range(count)]


def drained_hosts(names: list[str], drains: int) -> tuple[str, list[str]]:
    """The single drain's host and the concurrent drains' hosts, spread over the fleet."""
    step = len(names) / (drains + 1)
    picked = [names[int(i * step)] for i in range(drains + 1)]
    return picked[0], picked[1:]


def instance_names(count: int) -> list[str]:
    width = len(str(count))
    return [f"vm{n:0{width}d}" for n in range(count)]


class ScaleBench:
    def __init__(self, options: ScaleOptions, say: Say, root: Path | None = None) -> None:
        options.check()
        self.o, self.say = options, say
        self.root = root or Path(tempfile.mkdtemp(prefix="ferry-scale-"))
        self.names = [f"{PREFIX}{i}" for i in range(1, options.hosts + 1)]
        self.instances = instance_names(options.instances)
        self.single, self.many = drained_hosts(self.names, options.drains)
        self.networks = networks(options.instances)
        self.cluster = ScaleCluster(
            self.root,
            ClusterOptions(
                hosts=options.hosts,
                heartbeat_interval=options.beat_s,
                reconcile_interval=options.reconcile_interval,
                vcpus=options.host_vcpus,
                ram_mb=options.host_ram_mb,
                spread_s=options.beat_s,
                networks=[name for name, _cidr in self.networks],
            ),
        )

    async def run(self) -> ScaleResult:
        began = time.monotonic()
        try:
            result = await self._run()
        except (ScaleError, httpx.HTTPError, OSError) as exc:
            raise ScaleError(
                f"{exc or type(exc).__name__} (logs and state in {self.root})"
            ) from exc
        finally:
            await self.cluster.stop()
        result.wall_s = time.monotonic() - began
        return result

    async def _run(self) -> ScaleResult:
        setup: dict[str, float] = {}
        mark = time.monotonic()
        self.say(f"state in {self.root}; starting a controller and {self.o.hosts} hosts")
        await self.cluster.start()
        async with self.cluster.client() as api:
            await self._hosts_up(api)
            setup["fleet_up_s"] = time.monotonic() - mark
            setup.update(await self._seed(api))
            return await self._measure(api, setup)

    async def _measure(self, api: httpx.AsyncClient, setup: dict[str, float]) -> ScaleResult:
        o = self.o
        self.say(f"idle for {o.idle_s:g}s: heartbeats only")
        idle = await self._window(api, o.idle_s)
        load = ReadLoad(self.cluster.client(), self.names, [self.single, *self.many],
                        self.instances, o.read_rate)  # fmt: skip
        load.start()
        try:
            await asyncio.sleep(1.0)  # connections open, warm caches
            self.say(f"{o.read_rate:g} reads/s for {o.reads_s:g}s without a drain")
            load.phase = NO_DRAIN
            reads = await self._window(api, o.reads_s)
            load.phase = ONE_DRAIN
            one = await self._drain(api, [self.single])
            load.phase = "settle"
            await asyncio.sleep(1.0)
            load.phase = MANY_DRAINS
            many = await self._drain(api, self.many)
        finally:
            await load.stop()
            await load.api.aclose()
        verification = await self._verify(api)
        return ScaleResult(
            options=o,
            setup=setup,
            idle=idle,
            reads=reads,
            one=one,
            many=many,
            latency={p: load.summary(p) for p in (NO_DRAIN, ONE_DRAIN, MANY_DRAINS)},
            read_errors=dict(load.errors),
            read_skipped=dict(load.skipped),
            verification=verification,
            problems=list(verification["problems"]),
        )

    # -- setup -------------------------------------------------------------------------------

    async def _hosts_up(self, api: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + self.o.beat_s * 3 + 120
        while time.monotonic() < deadline:
            self.cluster.check()
            up = await call(api, "GET", "/v1/hosts", params={"liveness": "up"})
            if len(up) >= self.o.hosts:
                self.say(f"{len(up)} hosts up (heartbeat every {self.o.beat_s:g}s)")
                return
            await asyncio.sleep(1.0)
        raise ScaleError("the fleet's hosts did not all come up; see fleet.log")

    async def _seed(self, api: httpx.AsyncClient) -> dict[str, float]:
        o = self.o
        await call(
            api,
            "POST",
            "/v1/flavors",
            json={"name": FLAVOR, "vcpus": 1, "ram_mb": o.instance_ram_mb, "disk_gb": 0},
        )
        for name, cidr in self.networks:
            await call(api, "POST", "/v1/networks", json={"name": name, "cidr": cidr})
        self.say(f"seeding {o.instances} instances, {o.seed_concurrency} requests in flight")
        mark = time.monotonic()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(o.instances):
            queue.put_nowait(index)
        workers = [
            asyncio.create_task(self._creator(api, queue)) for _ in range(o.seed_concurrency)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
        created = time.monotonic() - mark
        self.say(f"{o.instances} instances created in {created:.1f}s; waiting for them to run")
        await self._all_running(api, o.instances)
        running = time.monotonic() - mark
        self.say(f"all running {running:.1f}s after the first request")
        return {"seed_create_s": created, "seed_running_s": running}

    async def _creator(self, api: httpx.AsyncClient, queue: asyncio.Queue[int]) -> None:
        step = max(1, self.o.instances // 10)
        while not queue.empty():
            index = queue.get_nowait()
            hosts, nets = len(self.names), len(self.networks)
            body = {"name": self.instances[index], "flavor": FLAVOR,
                    "network": self.networks[(index // hosts) % nets][0],
                    "host": self.names[index % hosts]}  # fmt: skip
            await call(api, "POST", "/v1/instances", json=body)
            if (index + 1) % step == 0:
                self.say(f"  {index + 1} requests sent")

    async def _all_running(self, api: httpx.AsyncClient, count: int) -> None:
        """Polls the whole list, so seldom at scale: it costs the controller a lot of work."""
        deadline, every = time.monotonic() + max(600.0, count / 10), max(2.0, count / 2000)
        while time.monotonic() < deadline:
            self.cluster.check()
            states = Counter(i["state"] for i in await call(api, "GET", "/v1/instances"))
            if states.get("error"):
                raise ScaleError(f"{states['error']} instance(s) failed to start")
            if states.get("running", 0) >= count:
                return
            await asyncio.sleep(every)
        raise ScaleError("the instances did not all start in time")

    # -- measuring ---------------------------------------------------------------------------

    async def sample(self, api: httpx.AsyncClient) -> Sample:
        metrics = await call(api, "GET", "/v1/metrics")
        cpu, fleet_cpu = self.cluster.cpu()
        return Sample(
            at=time.monotonic(),
            cpu_s=cpu,
            statements=int(metrics["db_statements"]),
            by_verb=dict(metrics["db_statements_by_verb"]),
            fleet_cpu_s=fleet_cpu,
        )

    async def _window(self, api: httpx.AsyncClient, seconds: float) -> Usage:
        start = await self.sample(api)
        await asyncio.sleep(seconds)
        self.cluster.check()
        return Usage.between(start, await self.sample(api))

    async def _drain(self, api: httpx.AsyncClient, hosts: list[str]) -> DrainPhase:
        self.say(f"{len(hosts)} host(s) enter maintenance at once")
        start = await self.sample(api)
        body = {"reason": "scale bench", "policy": self.o.policy}
        await asyncio.gather(
            *(call(api, "POST", f"/v1/hosts/{h}/maintenance/enter", json=body) for h in hosts)
        )
        deadline = time.monotonic() + self.o.drain_timeout_s
        waiting = set(hosts)
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            self.cluster.check()
            draining = await call(api, "GET", "/v1/hosts", params={"maintenance": "draining"})
            waiting &= {h["name"] for h in draining}
        usage = Usage.between(start, await self.sample(api))
        if waiting:
            raise ScaleError(f"{len(waiting)} drain(s) still running after the timeout")
        statuses = await asyncio.gather(
            *(call(api, "GET", f"/v1/hosts/{h}/maintenance") for h in hosts)
        )
        phase = DrainPhase(
            hosts=hosts,
            usage=usage,
            migrations=sum(_completed(s) for s in statuses),
            attempts=sum(len(s["migrations"]) for s in statuses),
            drain_s=[_drain_seconds(s) for s in statuses],
        )
        self.say(f"  {phase.migrations} migrations in {usage.wall_s:.1f}s, controller CPU "
                 f"{usage.cpu_s:.1f}s, {usage.statements} SQL statements")  # fmt: skip
        return phase

    # -- the outcome -------------------------------------------------------------------------

    async def _verify(self, api: httpx.AsyncClient) -> dict[str, Any]:
        self.say("checking the outcome with the controller and every agent")
        drained = [self.single, *self.many]
        hosts = {h["name"]: h for h in await call(api, "GET", "/v1/hosts")}
        listed = await call(api, "GET", "/v1/instances")
        async with self.cluster.agent_client() as agents:
            seen = await _guests(agents, {n: str(h["agent_url"]) for n, h in hosts.items()})
        return verify(hosts, listed, seen, drained, self.o.instances)


async def _guests(agents: httpx.AsyncClient, urls: dict[str, str]) -> dict[str, list[Any]]:
    """Every host's guests, as its agent reports them to the controller's certificate."""
    gate = asyncio.Semaphore(32)

    async def one(name: str, url: str) -> tuple[str, list[Any]]:
        async with gate:
            response = await agents.get(f"{url}/v1/guests")
            response.raise_for_status()
            return name, list(response.json())

    return dict(await asyncio.gather(*(one(n, u) for n, u in urls.items())))


def verify(
    hosts: dict[str, Any],
    listed: list[dict[str, Any]],
    seen: dict[str, list[Any]],
    drained: list[str],
    expected: int,
) -> dict[str, Any]:
    """Check the outcome: drained hosts in maintenance and empty, by the controller and by their
    agents; every instance running on exactly one host, the one the controller names."""
    problems: list[str] = []
    for name in drained:
        state = hosts[name]["maintenance"]["state"]
        if state != "in_maintenance":
            problems.append(f"{name} ended {state}, not in_maintenance")
        if hosts[name]["instances"] or seen.get(name):
            problems.append(f"{name} still holds instances or guests")
    running_on: dict[str, list[str]] = {}
    for host, guests in seen.items():
        for guest in guests:
            if guest["power"] == "running":
                running_on.setdefault(guest["id"], []).append(host)
    mismatched = [
        i["name"]
        for i in listed
        if i["state"] != "running" or running_on.get(i["id"], []) != [i["host"]]
    ]
    if len(listed) != expected:
        problems.append(f"{len(listed)} instances listed, {expected} seeded")
    if mismatched:
        problems.append(f"{len(mismatched)} instance(s) not running on exactly their host, e.g. "
                        f"{', '.join(mismatched[:5])}")  # fmt: skip
    extra = len(running_on) - len({i["id"] for i in listed})
    if extra > 0:
        problems.append(f"{extra} guest(s) run that the controller does not list")
    return {
        "instances": len(listed),
        "on_exactly_their_host": len(listed) - len(mismatched),
        "drained_in_maintenance": sum(
            hosts[n]["maintenance"]["state"] == "in_maintenance" for n in drained
        ),
        "drained": len(drained),
        "problems": problems,
    }


def _completed(status: dict[str, Any]) -> int:
    return sum(m["state"] == "completed" for m in status["migrations"])


def _drain_seconds(status: dict[str, Any]) -> float:
    drain = status["drain"]
    if not drain or not drain["finished_at"]:
        return 0.0
    started = datetime.fromisoformat(drain["created_at"].replace("Z", "+00:00"))
    finished = datetime.fromisoformat(drain["finished_at"].replace("Z", "+00:00"))
    return (finished - started).total_seconds()
