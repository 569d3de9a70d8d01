"""`ferry bench migration`: live-migration time and blackout in a running lab, for an idle and a
memory-dirtying guest, against the theoretical minimum measured in the same run (guest memory
divided by the raw TCP throughput between the two hosts' namespaces).

Each scenario boots one real instance on the first host (a root disk of the lab image on the
lab's shared storage, its address from DHCP) and migrates it back and forth with the
controller's normal workflow (TLS, the default convergence policy): the idle guest `idle_runs`
times (enough for a p99), the dirtying one `runs` times. A 10 ms pinger from the root namespace
measures the blackout the guest's users see, as lost probes and as the longest silence between
answers (median, p99 and max per scenario; `probe.py`), next to QEMU's own downtime.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ferry.bench.probe import Pinger, summary
from ferry.lab.cluster import HostRecord, LabRecord
from ferry.lab.lifecycle import ControllerApi, LabError, wait_for

MIB = 2**20
LINK_SAMPLE_MIB = 256
LINK_PORT = 47011
POLL = 0.1
ENDED = ("completed", "failed", "cancelled")
# A guest that took no DHCP lease never answers: after 90 s the bench fails saying so (one
# known cause: its address was a deleted guest's a moment ago, and every host's dnsmasq still
# holds that guest's lease, 600 s in the lab; a fresh lab has none)
ANSWER_TIMEOUT_S = 90
PROBE_S = 0.01  # one ping every 10 ms
LAB_IMAGE = "lab"  # the lab's bootable disk image (ferry.lab.lifecycle registers it)
Say = Callable[[str], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    ram_mb: int
    dirty_mibps: int


SCENARIOS = (Scenario("idle", 128, 0), Scenario("dirtying", 256, 40))


@dataclass(frozen=True)
class Sample:
    wall_s: float  # request to completion, as an operator waits for it
    stream_s: float  # the controller's record: stream start to the guest running on the target
    downtime_ms: int  # QEMU's own measure of the stop-and-copy
    blackout_ms: float  # the longest run of unanswered 10 ms probes
    silence_ms: float  # the longest time between two answers (wall clock, `ping -D`)
    lost_probes: int
    sent_mib: float
    passes: int
    migration_id: str = ""
    # Unix times of the answers around the silence (to set against events or a capture)
    gap_from: float | None = None
    gap_to: float | None = None


@dataclass(frozen=True)
class Result:
    scenario: Scenario
    minimum_s: float  # ram / link throughput
    samples: list[Sample]

    def median(self, field: str) -> float:
        return float(statistics.median(getattr(s, field) for s in self.samples))

    def ratio(self) -> float:
        return self.median("stream_s") / self.minimum_s

    def spread(self, field: str) -> dict[str, float]:
        """Median, p99 (nearest rank) and max of one figure over the samples."""
        return summary([float(getattr(s, field)) for s in self.samples])


async def link_throughput(src: HostRecord, dst: HostRecord, mib: int = LINK_SAMPLE_MIB) -> float:
    """MiB/s of one TCP stream from `src`'s namespace to `dst`'s management address."""
    if src.namespace is None or dst.namespace is None:
        raise LabError("the link baseline needs a lab of real hosts (namespaces)")
    py = [sys.executable, "-m", "ferry.bench.link"]
    sink = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", dst.namespace, *py, "sink", dst.mgmt_ip, str(LINK_PORT),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert sink.stdout is not None
    try:
        await asyncio.wait_for(sink.stdout.readline(), 10)  # "ready"
        source = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", src.namespace, *py, "source", dst.mgmt_ip, str(LINK_PORT),
            str(mib),
        )  # fmt: skip
        await asyncio.wait_for(source.wait(), 120)
        measured = json.loads(await asyncio.wait_for(sink.stdout.readline(), 10))
    finally:
        if sink.returncode is None:
            sink.kill()
        await sink.wait()
    return float(measured["bytes"]) / MIB / float(measured["seconds"])


class MigrationBench:
    def __init__(
        self,
        record: LabRecord,
        say: Say,
        runs: int,
        max_bandwidth_mib: int,
        idle_runs: int = 24,
        policy: dict[str, Any] | None = None,  # more convergence settings, for experiments
    ) -> None:
        if len(record.hosts) < 2:
            raise LabError("the migration bench needs a lab of at least 2 hosts")
        self.api = ControllerApi(record)
        self.hosts = record.hosts[:2]
        self.say, self.runs, self.max_bandwidth_mib = say, runs, max_bandwidth_mib
        self.idle_runs, self.policy = idle_runs, policy or {}

    def runs_of(self, scenario: Scenario) -> int:
        return self.idle_runs if scenario.dirty_mibps == 0 else self.runs

    async def run(self, scenarios: tuple[Scenario, ...] = SCENARIOS) -> list[Result]:
        link = await link_throughput(self.hosts[0], self.hosts[1])
        limit = min(link, float(self.max_bandwidth_mib))
        self.say(f"link {self.hosts[0].name} -> {self.hosts[1].name}: {link:.0f} MiB/s (TCP)")
        try:
            return [await self._scenario(s, limit) for s in scenarios]
        finally:
            await self.api.http.aclose()

    async def _scenario(self, scenario: Scenario, limit_mibps: float) -> Result:
        name = f"bench-{scenario.name}"
        try:
            ip = await self._boot(name, scenario)
            samples = []
            for index in range(self.runs_of(scenario)):
                target = self.hosts[(index + 1) % 2].name
                samples.append(await self._migrate(name, ip, target))
                self.say(f"{scenario.name} #{index + 1} -> {target}: {_brief(samples[-1])}")
        finally:
            await self.api.call("DELETE", f"/v1/instances/{name}")
        return Result(scenario, scenario.ram_mb / limit_mibps, samples)

    async def _boot(self, name: str, scenario: Scenario) -> str:
        flavor = f"bench-{scenario.ram_mb}"
        flavors = {f["name"] for f in await self.api.call("GET", "/v1/flavors")}
        if flavor not in flavors:
            body = {"name": flavor, "vcpus": 1, "ram_mb": scenario.ram_mb, "disk_gb": 1}
            await self.api.call("POST", "/v1/flavors", json=body)
        body = {"name": name, "flavor": flavor, "network": "lab", "host": self.hosts[0].name,
                "image": LAB_IMAGE, "dirty_rate_mbps": scenario.dirty_mibps}  # fmt: skip
        await self.api.call("POST", "/v1/instances", json=body)

        async def running() -> dict[str, Any] | None:
            inst: dict[str, Any] = await self.api.call("GET", f"/v1/instances/{name}")
            if inst["state"] == "error":
                raise LabError(f"{name} failed to boot: {inst.get('detail')}")
            return inst if inst["state"] == "running" else None

        inst = await wait_for(running, f"{name} to boot", 180)
        ip = str(inst["ports"][0]["ip"])
        await wait_for(
            lambda: _answers(ip), f"{name} to answer ping (its DHCP lease)", ANSWER_TIMEOUT_S
        )
        return ip

    async def _migrate(self, name: str, ip: str, target: str) -> Sample:
        pinger = await Pinger.start(ip, PROBE_S)
        await asyncio.sleep(0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        policy = {"max_bandwidth_mib": self.max_bandwidth_mib, **self.policy}
        m = await self.api.call(
            "POST", f"/v1/instances/{name}/migrate", json={"host": target, "policy": policy}
        )
        while m["state"] not in ENDED:
            await asyncio.sleep(POLL)
            m = await self.api.call("GET", f"/v1/migrations/{m['id']}")
        wall = loop.time() - started
        await asyncio.sleep(0.5)
        blackout = await pinger.stop()
        if m["state"] != "completed":
            raise LabError(f"migration of {name} {m['state']}: {m['error']}")
        return Sample(
            wall_s=wall,
            stream_s=_span(m["started_at"], m["finished_at"]),
            downtime_ms=int(m["downtime_ms"] or 0),
            blackout_ms=blackout.ms,
            silence_ms=blackout.silence_ms or 0.0,
            lost_probes=blackout.lost,
            sent_mib=(m["bytes_sent"] or 0) / MIB,
            passes=int(m["passes"] or 0),
            migration_id=str(m["id"]),
            gap_from=blackout.gap_from,
            gap_to=blackout.gap_to,
        )


async def _answers(ip: str) -> bool | None:
    proc = await asyncio.create_subprocess_exec(
        "ping", "-c", "1", "-W", "1", ip,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return True if await proc.wait() == 0 else None


def _span(start: str, end: str) -> float:
    from datetime import datetime  # noqa: PLC0415

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _brief(s: Sample) -> str:
    return (
        f"{s.stream_s:.2f} s streaming ({s.wall_s:.2f} s wall), {s.sent_mib:.0f} MiB in "
        f"{s.passes} passes, downtime {s.downtime_ms} ms, blackout {s.blackout_ms:.0f} ms, "
        f"silence {s.silence_ms:.0f} ms"
    )


def to_json(results: list[Result]) -> list[dict[str, Any]]:
    return [
        {
            "scenario": asdict(r.scenario),
            "minimum_s": r.minimum_s,
            "ratio_to_minimum": r.ratio(),
            "probe_interval_ms": PROBE_S * 1000,
            "blackout_ms": r.spread("blackout_ms"),
            "silence_ms": r.spread("silence_ms"),
            "downtime_ms": r.spread("downtime_ms"),
            "samples": [asdict(s) for s in r.samples],
        }
        for r in results
    ]
