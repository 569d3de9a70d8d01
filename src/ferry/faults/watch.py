"""Watching a drain until it reaches the phase a scenario asks for, and naming what the fault
will hit there. A watch hands out one target after another: when a fault comes too late for
one (the move went on meanwhile), the runner asks for the next migration reaching the phase.

A migration of a local disk runs twice over: first its disk is copied (the mirror phase: the
record's `disk` not ready, the source reports `mirroring`), then its RAM (the transfer phase,
and the switchover after it)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from ferry.faults.cluster import Cluster, ClusterError
from ferry.faults.inject import FaultMissed, Target
from ferry.faults.scenarios import Phase, Scenario

POLL_S = 0.03
PHASE_TIMEOUT_S = 60.0
MATCHING: dict[Phase, frozenset[str]] = {
    # a destination listens and the migration waits for its stream (a prepared-ahead one
    # waits while the source's streams are busy)
    Phase.PREPARE: frozenset({"preparing"}),
    Phase.TRANSFER: frozenset({"running"}),
    Phase.SWITCHOVER: frozenset({"running", "switching"}),
    Phase.MIRROR: frozenset({"running"}),
}
HANDED_OVER = frozenset({"device", "completed"})
LEAD_S = 0.15  # a stream due to complete sooner than this is waited for, to hit it just after
PAST_S = 0.005  # how long after the predicted completion the fault comes


def _mirroring(migration: dict[str, Any]) -> bool:
    """Its local disk is being copied and not in sync yet (the RAM waits for it)."""
    disk = migration.get("disk")
    return disk is not None and not disk.get("ready")


class PhaseWatch:
    def __init__(
        self, cluster: Cluster, scenario: Scenario, source: str, plan: list[dict[str, Any]]
    ) -> None:
        self.cluster = cluster
        self.scenario = scenario
        self.source = source
        self.plan = sorted(plan, key=lambda e: str(e["instance"]))
        self.seen: list[str] = []  # migrations (or planned instances) seen in the phase
        self._ids: dict[str, str] = {}  # instance name -> id

    async def next(self) -> Target:
        """The next target: at fan-out the pick-th planned move (once); otherwise the pick-th
        migration seen in the phase, then each later one. `FaultMissed` when the drain ends
        (or the time runs out) first."""
        self._ids = self._ids or {
            i["name"]: i["id"] for i in await self.cluster.call("GET", "/v1/instances")
        }
        if self.scenario.phase is Phase.FANOUT:
            return self._planned()
        return await self._reach()

    def _planned(self) -> Target:
        if self.seen:
            raise FaultMissed("fan-out is over")
        entry = self.plan[min(self.scenario.pick, len(self.plan) - 1)]
        self.seen.append(entry["instance"])
        name = entry["instance"]
        return Target(self.source, name, self._ids[name], entry.get("destination"))

    async def _reach(self) -> Target:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PHASE_TIMEOUT_S
        while loop.time() < deadline:
            status = await self.cluster.call("GET", f"/v1/hosts/{self.source}/maintenance")
            drain = status.get("drain") or {}
            if drain.get("state") != "running":
                raise FaultMissed(
                    f"the drain ended {drain.get('state')} before {self.scenario.phase}"
                )
            for migration in await self._in_phase(status["migrations"]):
                if migration["id"] not in self.seen:
                    self.seen.append(migration["id"])
                    if len(self.seen) > self.scenario.pick:
                        return self._target(migration)
            await asyncio.sleep(POLL_S)
        raise FaultMissed(f"{self.scenario.phase} did not come within {PHASE_TIMEOUT_S:g}s")

    async def _in_phase(self, migrations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The live migrations in the phase. A migration that copies a local disk (`disk` in
        its record) is in the mirror phase while the copy is not in sync, and only after it in
        the transfer and switchover phases (its RAM moves once the disk is ready)."""
        phase = self.scenario.phase
        found = [
            m
            for m in migrations
            if m["state"] in MATCHING[phase]
            and m["kind"] == "live"
            and (m["state"] != "running" or _mirroring(m) is (phase is Phase.MIRROR))
        ]
        if phase is Phase.MIRROR:
            return [m for m in found if await self._still_mirroring(m)]
        if phase is not Phase.SWITCHOVER:
            return found
        return [m for m in found if m["state"] == "switching" or await self._handing_over(m)]

    async def _still_mirroring(self, migration: dict[str, Any]) -> bool:
        """The source says so too (the record is its last reading, a moment old)."""
        reading = await self._progress(migration)
        return (
            reading is not None
            and reading.get("status") == "mirroring"
            and not reading.get("disk_ready")
        )

    async def _handing_over(self, migration: dict[str, Any]) -> bool:
        """The source's stream completed (or reached its switchover) ahead of the record, or is
        about to: then wait until just after, so that the fault comes between the hand-over
        and the controller's finishing of the move, as it would by chance with real guests."""
        reading = await self._progress(migration)
        if reading is None or reading.get("status") in HANDED_OVER:
            return reading is not None
        rate = float(reading.get("throughput_mbps") or 0) * 1e6 / 8
        eta = int(reading.get("remaining_bytes") or 0) / rate if rate else None
        if reading.get("status") != "active" or eta is None or eta > LEAD_S:
            return False
        await asyncio.sleep(eta + PAST_S)  # the fault's own report says what it met
        return True

    async def _progress(self, migration: dict[str, Any]) -> dict[str, Any] | None:
        instance_id = self._ids[migration["instance"]]
        url = f"{self.cluster.agent_urls[self.source]}/v1/guests/{instance_id}/migration"
        try:
            response = await self.cluster.agent_http.get(url)
        except httpx.TransportError:
            return None
        reading: dict[str, Any] = response.json() if response.is_success else {}
        return reading or None

    def _target(self, migration: dict[str, Any]) -> Target:
        name = migration["instance"]
        if name not in self._ids:
            raise ClusterError(f"the migrating instance {name} is unknown")
        return Target(
            self.source,
            name,
            self._ids[name],
            migration["destination"],
            migration["id"],
            migration["state"],
        )
