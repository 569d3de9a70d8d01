"""Seeded fault runs: each run starts a fresh fake cluster, boots instances on the hosts it drains,
enters maintenance, waits for the scenario's phase, injects the fault (and undoes what life
undoes: restarts, the link coming back), leaves the cluster to settle (bounded), then checks the
invariants. Every process a run started is stopped whatever happens, Ctrl-C included.

A run's report says its seed, the fault and when it hit, the outcome (`clean`, `violated`,
`missed` when the drain ended before the phase came, `error` when the run itself could not go
on) and each violation.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ferry.agent_client import AgentClient
from ferry.faults.cluster import Cluster, ClusterError, FakeCluster
from ferry.faults.collect import Probes, disks_before, instance_record, take_snapshot
from ferry.faults.disks import fake_disk_reading
from ferry.faults.inject import FakeInjector, FaultMissed, Injector
from ferry.faults.invariants import ACTIVE_MIGRATION, DiskReading, Snapshot, check
from ferry.faults.scenarios import Phase, Scenario
from ferry.faults.watch import PhaseWatch

Say = Callable[[str], None]
SETTLE_S = 90.0
NO_PROGRESS_S = 3.0  # the drains' no-progress timeout: a cut link is judged quickly
NETWORK_CIDR = "10.240.0.0/16"  # a record only: fake guests configure nothing
FLAVOR = "tiny"


def fake_cluster(workdir: Path, scenario: Scenario) -> Cluster:
    return FakeCluster(workdir, scenario.hosts, storage=scenario.storage.value)


def fake_probes(cluster: Cluster) -> Probes:
    """Fake hosts' disks are files of this machine: each is read where its host keeps it."""
    if not isinstance(cluster, FakeCluster):
        raise TypeError(f"fake probes were given a {type(cluster).__name__}")

    async def disk(host: str, instance_id: str) -> DiskReading | None:
        return await asyncio.to_thread(fake_disk_reading, cluster.disk_path(host, instance_id))

    return Probes(disk=disk)


@dataclass(frozen=True)
class Backend:
    """Where runs happen: a cluster for a directory and a scenario (its hosts, its storage), an
    injector for it, and the probes of what the hosts hold. Fake hosts by default; real hosts
    (the lab) supply their own three, and the runs, the phases and the invariants stay the
    same."""

    cluster: Callable[[Path, Scenario], Cluster] = fake_cluster
    injector: Callable[[Cluster], Injector] = FakeInjector
    probes: Callable[[Cluster], Probes] | None = fake_probes
    # what the backend can afford of a scenario (real guests: fewer, slower streams)
    adapt: Callable[[Scenario], Scenario] = lambda scenario: scenario
    results: str = "faults.json"  # the report's name in the output directory
    # readies the booted instances for the scenario before the drain (real disks: data to copy)
    prime: Callable[[Cluster, Scenario], Awaitable[None]] | None = None


FAKE = Backend()


@dataclass
class RunReport:
    seed: int
    kind: str
    phase: str
    storage: str = "shared"
    outcome: str = "error"
    when: str = ""
    fault: str = ""
    drains: dict[str, str] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # targets the fault came too late for
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step of the run
    directory: str | None = None
    scenario: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.outcome in ("violated", "error")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def run_scenario(
    scenario: Scenario, workdir: Path, settle_s: float = SETTLE_S, backend: Backend = FAKE
) -> RunReport:
    scenario = backend.adapt(scenario)
    report = RunReport(
        scenario.seed,
        scenario.kind.value,
        scenario.phase.value,
        storage=scenario.storage.value,
        scenario=scenario.to_json(),
    )
    started = time.monotonic()
    cluster = backend.cluster(workdir, scenario)
    try:
        await cluster.start()
        report.timings["start"] = _since(started)
        await _go(cluster, backend, scenario, report, settle_s)
    except Exception as exc:  # any failure of the run itself is reported, not raised
        report.outcome = "error"
        report.violations.append(f"the run could not go on: {type(exc).__name__}: {exc}")
    finally:
        stopping = time.monotonic()
        await cluster.stop()
        report.timings["stop"] = _since(stopping)
        report.seconds = _since(started)
    return report


def _since(moment: float) -> float:
    return round(time.monotonic() - moment, 1)


async def _go(
    cluster: Cluster, backend: Backend, scenario: Scenario, report: RunReport, settle_s: float
) -> None:
    sources = cluster.names[: scenario.drains]
    step = time.monotonic()
    await _prepare(cluster)
    names = await _populate(cluster, scenario, sources)
    probes = backend.probes(cluster) if backend.probes else None
    await _answering(cluster, names, probes)  # drains move booted guests, as in life
    if backend.prime is not None:
        await backend.prime(cluster, scenario)
    before = await disks_before(cluster, probes)  # what each disk must still hold at the end
    report.timings["boot"] = _since(step)
    entered = time.monotonic()
    plans = [await _enter(cluster, scenario, host) for host in sources]
    watch = PhaseWatch(cluster, scenario, sources[0], plans[0])
    try:
        names.discard(await _inject(cluster, backend, scenario, report, watch, entered) or "")
    except FaultMissed as exc:
        report.outcome = "missed"
        report.fault = f"none: {exc}"
    step = time.monotonic()
    settled = await settle(cluster, settle_s)
    report.timings["settle"] = _since(step)
    snapshot = await _snapshot(cluster, probes)
    snapshot.must_run = names  # no fault took their only copy: they must have survived
    snapshot.disk_before = before
    report.violations += [str(v) for v in check(snapshot)]
    if not settled and not report.violations:
        report.violations.append(f"the cluster did not settle within {settle_s:g}s")
    report.drains = {d.host: d.state for d in snapshot.drains}
    report.instances = dict(Counter(i.state for i in snapshot.live()))
    if report.outcome != "missed" or report.violations:
        report.outcome = "violated" if report.violations else "clean"


async def _prepare(cluster: Cluster) -> None:
    """The flavor and a network for the instances, unless the cluster came with them (a lab
    has its own instance network). The flavor's 1 GiB disk holds the cluster's image (a few KiB
    on fake hosts)."""
    if not any(f["name"] == FLAVOR for f in await cluster.call("GET", "/v1/flavors")):
        body = {"name": FLAVOR, "vcpus": 1, "ram_mb": 128, "disk_gb": 1}
        await cluster.call("POST", "/v1/flavors", json=body)
    if not await cluster.call("GET", "/v1/networks"):
        await cluster.call("POST", "/v1/networks", json={"name": "default", "cidr": NETWORK_CIDR})


async def _populate(cluster: Cluster, scenario: Scenario, sources: list[str]) -> set[str]:
    """The scenario's instances on the hosts it drains, each with a disk of the cluster's
    image when it has one (so that every move takes a disk along)."""
    network = (await cluster.call("GET", "/v1/networks"))[0]["name"]
    disk = {"image": cluster.image} if cluster.image else {}
    names = []
    for host in sources:
        for n in range(scenario.instances):
            body = {
                "name": f"{host}-vm{n}",
                "flavor": FLAVOR,
                "network": network,
                "host": host,
                **disk,
            }
            names.append((await cluster.call("POST", "/v1/instances", json=body))["name"])

    async def all_running() -> bool:
        listed = [i for i in await cluster.call("GET", "/v1/instances") if i["name"] in names]
        failed = [f"{i['name']}: {i['error']}" for i in listed if i["state"] == "error"]
        if failed:
            raise ClusterError(f"instances failed to boot ({'; '.join(failed)})")
        return all(i["state"] == "running" for i in listed)

    await _until(all_running, 60 + 15 * len(names), "the instances to run")
    return set(names)


async def _answering(cluster: Cluster, names: set[str], probes: Probes | None) -> None:
    """Until every instance answers on its IP, where hosts can say (real guests boot after
    their QEMU starts)."""
    if probes is None or probes.ip_answers is None:
        return
    listed = [instance_record(i) for i in await cluster.call("GET", "/v1/instances")]
    booting = [i for i in listed if i.name in names]
    answers = await asyncio.gather(*(probes.ip_answers(i) for i in booting))
    silent = [i.name for i, ok in zip(booting, answers, strict=True) if not ok]
    if silent:
        raise ClusterError(f"instances never answered on their IP: {', '.join(silent)}")


async def _enter(cluster: Cluster, scenario: Scenario, host: str) -> list[dict[str, Any]]:
    policy = {
        "max_outbound": scenario.max_outbound,
        "retry_backoff_s": 0.5,
        "migration": {"max_bandwidth_mib": scenario.bandwidth_mib, "no_progress_s": NO_PROGRESS_S},
    }
    body = {"reason": f"fault run {scenario.seed}", "policy": policy}
    status = await cluster.call("POST", f"/v1/hosts/{host}/maintenance/enter", json=body)
    plan: list[dict[str, Any]] = status["drain"]["plan"]
    return plan


async def _inject(
    cluster: Cluster,
    backend: Backend,
    scenario: Scenario,
    report: RunReport,
    watch: PhaseWatch,
    entered: float,
) -> str | None:
    """The fault, at the first target it can still hit (`FaultMissed` when none is left); the
    instance it may have cost (it killed the only copy of its guest), if any."""
    injector = backend.injector(cluster)
    if scenario.phase is Phase.FANOUT:
        await asyncio.sleep(scenario.delay_s)
    while True:
        target = await watch.next()
        after = _since(entered)
        report.when = f"{scenario.phase}: {target.describe()}, {after:.1f}s after entering"
        report.timings["phase"] = after
        step = time.monotonic()
        try:
            injected = await injector.inject(scenario.kind, target, scenario.down_s)
        except FaultMissed as exc:
            report.notes.append(f"too late for {target.describe()}: {exc}")
            continue
        report.fault = injected.said
        report.timings["fault"] = _since(step)
        return None if injected.spares_target else target.instance


async def settle(cluster: Cluster, within: float) -> bool:
    """Until nothing moves any more and every host is up, for two heartbeats in a row (so that
    the agents' reports have been heard); False when `within` runs out first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    calm_since: float | None = None
    while loop.time() < deadline:
        if await _calm(cluster):
            calm_since = calm_since or loop.time()
            if loop.time() - calm_since >= 2 * cluster.heartbeat_s + 0.5:
                return True
        else:
            calm_since = None
        await asyncio.sleep(0.25)
    return False


async def _calm(cluster: Cluster) -> bool:
    try:
        if not await cluster.hosts_up():
            return False
        hosts = await cluster.call("GET", "/v1/hosts")
        migrations = await cluster.call("GET", "/v1/migrations?limit=1000")
        instances = await cluster.call("GET", "/v1/instances")
    except (ClusterError, httpx.HTTPError):
        return False
    return (
        all(h["maintenance"]["state"] != "draining" for h in hosts)
        and all(m["state"] not in ACTIVE_MIGRATION and not m["leftover"] for m in migrations)
        and all(i["state"] not in ("building", "deleting") for i in instances)
    )


async def _snapshot(cluster: Cluster, probes: Probes | None) -> Snapshot:
    agents = AgentClient(cluster.controller_tls(), timeout=10)
    try:
        return await take_snapshot(cluster, agents, cluster.database, probes)
    finally:
        await agents.close()


async def _until(check: Callable[[], Any], within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise ClusterError(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(0.1)


# -- many runs ---------------------------------------------------------------------------------


async def run_all(
    scenarios: list[Scenario],
    out: Path | None = None,
    say: Say | None = None,
    settle_s: float = SETTLE_S,
    backend: Backend = FAKE,
    keep_all: bool = False,
) -> list[RunReport]:
    """Run each scenario in turn, each in a directory of its own (logs, state) under `out`
    (which also gets the reports as `backend.results`, `faults.json` by default) or the
    system's temporary directory. A failed run's directory is kept and named in its report;
    the others are removed unless `keep_all`."""
    reports: list[RunReport] = []
    if out is not None:
        await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    for scenario in scenarios:
        parent = str(out) if out is not None else None
        workdir = Path(tempfile.mkdtemp(prefix=f"ferry-faults-{scenario.seed}-", dir=parent))
        try:
            report = await run_scenario(scenario, workdir, settle_s, backend)
        except BaseException:  # interrupted: its processes are stopped, its files go too
            if not keep_all:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        if report.failed or keep_all:
            report.directory = str(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        reports.append(report)
        if out is not None:
            (out / backend.results).write_text(
                json.dumps([r.to_json() for r in reports], indent=2) + "\n"
            )
        if say is not None:
            say(line(report))
    return reports


def line(report: RunReport) -> str:
    text = f"seed {report.seed}: {report.kind} at {report.phase}, {report.storage} storage"
    text += f": {report.outcome}"
    if report.when:
        text += f"\n  when: {report.when}"
    if report.fault:
        text += f"\n  fault: {report.fault}"
    for note in report.notes:
        text += f"\n  note: {note}"
    for violation in report.violations:
        text += f"\n  ! {violation}"
    if report.directory and report.failed:
        text += f"\n  logs: {report.directory}"
    return text
