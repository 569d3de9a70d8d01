"""`ferry bench drain`: how long a live drain of a host takes, against the physical bound (the
bytes the drain moved divided by the source's link throughput, measured by a TCP stream in the
same run) and against the same drain done one migration at a time (`max_parallel` 1,
`max_outbound` 1, `prepare_ahead` 0: what a client-side loop does), on the same guests in the
same run, for each workload (idle guests, guests dirtying memory at a set rate; on a lab with
local storage, guests whose disks hold data to copy, idle or writing to their disks). Every guest is
pinged every 10 ms during each drain: the blackout per instance, as lost probes and as the longest
silence between answers (`probe.py`). The guests are real instances: root disks of the lab
image (on the lab's storage: shared, or each host's own for the disk workloads, where the bound
counts the disks' copied bytes with the RAM's), addresses from DHCP. The migrations' throughput
(bytes sent over each one's time) is set against the link's.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ferry.bench.migration import (
    ANSWER_TIMEOUT_S,
    LAB_IMAGE,
    MIB,
    POLL,
    PROBE_S,
    Say,
    _answers,
    link_throughput,
)
from ferry.bench.probe import Pinger, summary
from ferry.lab.cluster import LabRecord
from ferry.lab.disk_fill import fill, flavor_disk_gb, qmp_socket
from ferry.lab.lifecycle import ControllerApi, LabError, wait_for

ONE_AT_A_TIME = {"max_parallel": 1, "max_outbound": 1, "prepare_ahead": 0}


@dataclass(frozen=True)
class Workload:
    name: str
    dirty_mibps: int  # what each guest dirties per second (0: idle)
    disk_mib: int = 0  # data on each guest's local disk before the drain (0: RAM only)
    disk_write_kibps: int = 0  # what each guest writes to its disk throughout

    @property
    def local(self) -> bool:
        """It moves disks: the lab's hosts must keep them on local storage."""
        return self.disk_mib > 0


IDLE = Workload("idle", 0)
WORKLOAD_NAMES = ("idle", "dirtying", "disk-idle", "disk-writing")


@dataclass(frozen=True)
class Rates:
    dirty_mibps: int = 16  # the dirtying guests'
    disk_mib: int = 1024  # the data on each disk of the disk workloads
    disk_write_kibps: int = 1024  # the disk-writing guests'


def workloads_named(names: str, rates: Rates) -> tuple[Workload, ...]:
    """The workloads of a comma-separated list (`idle`, `dirtying`, and on local storage
    `disk-idle`, `disk-writing`); ValueError naming the known ones for anything else."""
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(WORKLOAD_NAMES))
    if unknown or not chosen:
        raise ValueError(
            f"unknown workload(s) {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(WORKLOAD_NAMES)}"
        )
    known = {
        "idle": IDLE,
        "dirtying": Workload("dirtying", rates.dirty_mibps),
        "disk-idle": Workload("disk-idle", 0, rates.disk_mib),
        "disk-writing": Workload("disk-writing", 0, rates.disk_mib, rates.disk_write_kibps),
    }
    return tuple(known[n] for n in dict.fromkeys(chosen))


MODES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("ferry", {}),
    ("one at a time", ONE_AT_A_TIME),
)


@dataclass(frozen=True)
class DrainRun:
    workload: str
    mode: str
    wall_s: float  # maintenance enter to in_maintenance
    moved_mib: float  # bytes the drain's migrations sent: RAM streams and disk copies
    link_mibps: float
    blackouts_ms: list[float] = field(default_factory=list)
    downtimes_ms: list[int] = field(default_factory=list)
    throughputs_mibps: list[float] = field(default_factory=list)  # each migration's bytes / time
    silences_ms: list[float] = field(default_factory=list)  # per instance, wall clock
    disk_mib: float = 0.0  # of moved_mib: the disk copies'

    @property
    def bound_s(self) -> float:
        return self.moved_mib / self.link_mibps

    @property
    def ratio_to_bound(self) -> float:
        return self.wall_s / self.bound_s if self.bound_s else float("inf")


def blackout_summary(values: list[float]) -> dict[str, float]:
    """Median, p99 (nearest rank) and max of per-instance blackouts."""
    return summary(values)


class DrainBench:
    def __init__(
        self,
        record: LabRecord,
        say: Say,
        instances: int,
        max_bandwidth_mib: int,
        workloads: tuple[Workload, ...] = (IDLE,),
    ):
        if len(record.hosts) < 3:
            raise LabError("the drain bench needs a lab of at least 3 hosts")
        self.api = ControllerApi(record)
        self.hosts = record.hosts[:3]
        self.lab_dir = Path(record.dir)
        self.say, self.count, self.max_bandwidth_mib = say, instances, max_bandwidth_mib
        self.workloads = workloads
        self.names = [f"drain-{n}" for n in range(instances)]

    async def run(self) -> list[DrainRun]:
        source = self.hosts[0]
        link = await link_throughput(source, self.hosts[1])
        self.say(f"source link {source.name} -> {self.hosts[1].name}: {link:.0f} MiB/s (TCP)")
        runs = []
        try:
            for workload in self.workloads:
                ips = await self._boot(workload)
                for mode, limits in MODES:
                    await self._gather_on_source()
                    runs.append(await self._drain(workload, mode, limits, ips, link))
                    self.say(_brief(runs[-1]))
                await self._delete_guests()
            return runs
        finally:
            await self._clean_up()

    async def _boot(self, workload: Workload) -> dict[str, str]:
        self.say(f"{workload.name}: booting {self.count} guests dirtying "
                 f"{workload.dirty_mibps} MiB/s each on {self.hosts[0].name}")  # fmt: skip
        flavor = await self._flavor(workload)
        for name in self.names:
            body = {"name": name, "flavor": flavor, "network": "lab", "host": self.hosts[0].name,
                    "image": LAB_IMAGE, "dirty_rate_mbps": workload.dirty_mibps,
                    "disk_write_kibps": workload.disk_write_kibps}  # fmt: skip
            await self.api.call("POST", "/v1/instances", json=body)
        ips = {name: await self._ready(name) for name in self.names}
        if workload.local:
            await self._fill_disks(workload)
        return ips

    async def _flavor(self, workload: Workload) -> str:
        """`tiny` for RAM-only workloads; for the disk ones a flavor whose disk holds their data
        (made once: a lab that has it already keeps it). LabError unless the lab's hosts keep
        disks on local storage (on shared storage a drain copies no disk)."""
        if not workload.local:
            return "tiny"
        host = await self.api.call("GET", f"/v1/hosts/{self.hosts[0].name}")
        if (host.get("storage") or {}).get("kind") != "local":
            raise LabError(f"the {workload.name} workload needs a lab on local storage "
                           "(ferry lab up --storage local)")  # fmt: skip
        size = flavor_disk_gb(workload.disk_mib)
        name = f"bench-disk-{size}g"
        flavors = await self.api.call("GET", "/v1/flavors")
        if name not in {f["name"] for f in flavors}:
            body = {"name": name, "vcpus": 1, "ram_mb": 128, "disk_gb": size}
            await self.api.call("POST", "/v1/flavors", json=body)
        return name

    async def _fill_disks(self, workload: Workload) -> None:
        self.say(f"{workload.name}: writing {workload.disk_mib} MiB into each guest's disk")
        for name in self.names:
            inst = await self.api.call("GET", f"/v1/instances/{name}")
            await fill(qmp_socket(self.lab_dir, inst["host"], inst["id"]), workload.disk_mib)

    async def _ready(self, name: str) -> str:
        inst = await wait_for(lambda: self._running(name), f"{name} to boot", 180)
        ip = str(inst["ports"][0]["ip"])
        await wait_for(lambda: _answers(ip), f"{name} to answer (its DHCP lease)", ANSWER_TIMEOUT_S)
        return ip

    async def _running(self, name: str) -> dict[str, Any] | None:
        inst: dict[str, Any] = await self.api.call("GET", f"/v1/instances/{name}")
        if inst["state"] == "error":
            raise LabError(f"{name} failed: {inst.get('error')}")
        return inst if inst["state"] == "running" else None

    async def _gather_on_source(self) -> None:
        """Bring every guest back to the source, one after the other."""
        source = self.hosts[0].name
        for name in self.names:
            inst = await self.api.call("GET", f"/v1/instances/{name}")
            if inst["host"] == source:
                continue
            body = {"host": source, "policy": {"max_bandwidth_mib": self.max_bandwidth_mib}}
            m = await self.api.call("POST", f"/v1/instances/{name}/migrate", json=body)
            while m["state"] not in ("completed", "failed", "cancelled"):
                await asyncio.sleep(POLL)
                m = await self.api.call("GET", f"/v1/migrations/{m['id']}")
            if m["state"] != "completed":
                raise LabError(f"could not bring {name} back: {m['error']}")

    async def _drain(
        self,
        workload: Workload,
        mode: str,
        limits: dict[str, Any],
        ips: dict[str, str],
        link: float,
    ) -> DrainRun:
        source = self.hosts[0].name
        pingers = {name: await Pinger.start(ip, PROBE_S) for name, ip in ips.items()}
        await asyncio.sleep(0.5)
        policy = {**limits, "migration": {"max_bandwidth_mib": self.max_bandwidth_mib}}
        loop = asyncio.get_running_loop()
        started = loop.time()
        body = {"reason": f"bench: {mode}", "policy": policy}
        await self.api.call("POST", f"/v1/hosts/{source}/maintenance/enter", json=body)
        status = await self._status()
        while status["maintenance"]["state"] == "draining":
            await asyncio.sleep(POLL)
            status = await self._status()
        wall = loop.time() - started
        await asyncio.sleep(0.5)
        probed = [await p.stop() for p in pingers.values()]
        await self.api.call(
            "POST", f"/v1/hosts/{source}/maintenance/exit", json={"reason": "bench"}
        )
        if status["maintenance"]["state"] != "in_maintenance":
            raise LabError(f"the {mode} drain ended {status['maintenance']['state']}: "
                           f"{status['drain']['error']}")  # fmt: skip
        done = [m for m in status["migrations"] if m["state"] == "completed"]
        disk = sum((m.get("disk") or {}).get("copied_bytes", 0) for m in done) / MIB
        return DrainRun(
            workload=workload.name,
            mode=mode,
            wall_s=wall,
            moved_mib=sum(m["bytes_sent"] or 0 for m in done) / MIB + disk,
            disk_mib=disk,
            link_mibps=link,
            blackouts_ms=[b.ms for b in probed],
            downtimes_ms=[int(m["downtime_ms"] or 0) for m in done],
            throughputs_mibps=[t for m in done if (t := migration_throughput(m)) is not None],
            silences_ms=[b.silence_ms or 0.0 for b in probed],
        )

    async def _status(self) -> dict[str, Any]:
        status: dict[str, Any] = await self.api.call(
            "GET", f"/v1/hosts/{self.hosts[0].name}/maintenance"
        )
        return status

    async def _delete_guests(self) -> None:
        """Delete the guests and wait until they are gone (the next workload reuses the names)."""
        for name in self.names:
            with contextlib.suppress(LabError):  # never booted, or gone already
                await self.api.call("DELETE", f"/v1/instances/{name}")
        await wait_for(self._all_gone, "the guests to be deleted", 120)

    async def _all_gone(self) -> bool | None:
        listed = await self.api.call("GET", "/v1/instances")
        return True if not {i["name"] for i in listed} & set(self.names) else None

    async def _clean_up(self) -> None:
        try:
            for name in self.names:
                with contextlib.suppress(LabError):  # never booted, or gone already
                    await self.api.call("DELETE", f"/v1/instances/{name}")
        finally:
            await self.api.http.aclose()


def migration_throughput(migration: dict[str, Any]) -> float | None:
    """MiB/s a completed migration sent over its time (start to finish), if both are known."""
    started, finished = migration.get("started_at"), migration.get("finished_at")
    if not started or not finished or not migration.get("bytes_sent"):
        return None
    seconds = (_instant(finished) - _instant(started)).total_seconds()
    return float(migration["bytes_sent"]) / MIB / seconds if seconds > 0 else None


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _brief(run: DrainRun) -> str:
    b = blackout_summary(run.blackouts_ms)
    return (
        f"{run.workload}, {run.mode}: {run.wall_s:.1f} s for {run.moved_mib:.0f} MiB (bound "
        f"{run.bound_s:.1f} s, x{run.ratio_to_bound:.2f}); blackout median {b['median']:.0f} ms, "
        f"max {b['max']:.0f} ms; silence median {summary(run.silences_ms)['median']:.0f} ms"
    )


def to_json(runs: list[DrainRun]) -> dict[str, Any]:
    """Each run with its ratios: to the physical bound, to the one-at-a-time drain of the same
    workload, and the median migration throughput to the link's."""
    baselines = {r.workload: r for r in runs if r.mode == "one at a time"}
    out = []
    for r in runs:
        baseline = baselines.get(r.workload)
        throughput = statistics.median(r.throughputs_mibps) if r.throughputs_mibps else 0.0
        out.append({
            **asdict(r),
            "bound_s": r.bound_s,
            "ratio_to_bound": r.ratio_to_bound,
            "blackout_ms": blackout_summary(r.blackouts_ms),
            "silence_ms": summary(r.silences_ms),
            "ratio_to_one_at_a_time": r.wall_s / baseline.wall_s if baseline else None,
            "throughput_mibps_median": throughput,
            "throughput_to_link": throughput / r.link_mibps if r.link_mibps else None,
            "drain_rate_to_link": r.moved_mib / r.wall_s / r.link_mibps if r.wall_s else None,
        })  # fmt: skip
    return {"probe_interval_ms": PROBE_S * 1000, "runs": out}
