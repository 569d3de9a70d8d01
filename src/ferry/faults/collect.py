"""A snapshot of a cluster for the invariants: the controller's records through its API (as an
admin), what each host's agent runs and which instance disks its storage holds through the
agent API (with the controller's certificate, as the controller asks during reconciles), and
the claims themselves from the controller's SQLite database when it is at hand (read-only; the
API shows only each host's totals).

Backends plug in `Probes`: whether each running instance's IP answers, what QEMU processes or
taps a host holds that belong to none of its instances (real hosts), and how an instance's disk
reads on a host (fake and real hosts: faults/disks.py), taken once before the drain
(`disks_before`, the digests) and again in the snapshot.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ferry.agent_client import AgentClient, AgentUnavailable
from ferry.faults.invariants import (
    Claim,
    DiskReading,
    DrainRecord,
    GuestCopy,
    HostDisks,
    HostRecord,
    InstanceRecord,
    MigrationRecord,
    Snapshot,
)

IpAnswers = Callable[[InstanceRecord], Awaitable[bool]]
Leaks = Callable[[str, list[GuestCopy]], Awaitable[list[str]]]
ReadDisk = Callable[[str, str], Awaitable[DiskReading | None]]


class ControllerApi(Protocol):
    async def call(self, method: str, path: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Probes:
    """Checks that only real hosts can answer, each optional.

    `ip_answers(instance)`: does the instance answer on its IP (`instance.ips`) from where the
    check runs (a ping or a TCP connect)? `leaks(host, guests)`: the QEMU processes and taps on
    `host` that belong to none of `guests` (what its agent reports), described for people.
    `disk(host, instance_id)`: the instance's disk on that host's storage, read (None: none
    there).
    """

    ip_answers: IpAnswers | None = None
    leaks: Leaks | None = None
    disk: ReadDisk | None = None


async def take_snapshot(
    api: ControllerApi,
    agents: AgentClient,
    database: Path | None = None,
    probes: Probes | None = None,
) -> Snapshot:
    raw_hosts: list[dict[str, Any]] = await api.call("GET", "/v1/hosts")
    instances = [instance_record(i) for i in await api.call("GET", "/v1/instances")]
    migrations = [_migration(m) for m in await api.call("GET", "/v1/migrations?limit=1000")]
    drains = []
    for host in raw_hosts:
        status = await api.call("GET", f"/v1/hosts/{host['name']}/maintenance")
        if status.get("drain"):
            drain = status["drain"]
            drains.append(DrainRecord(drain["id"], host["name"], drain["state"], drain["error"]))
    names = [h["name"] for h in raw_hosts]
    urls = [h.get("agent_url") for h in raw_hosts]
    guests = dict(
        zip(names, await asyncio.gather(*(_guests(agents, u) for u in urls)), strict=True)
    )
    disks = dict(zip(names, await asyncio.gather(*(_disks(agents, u) for u in urls)), strict=True))
    snapshot = Snapshot(
        instances=instances,
        hosts=[_host(h) for h in raw_hosts],
        drains=drains,
        migrations=migrations,
        guests=guests,
        disks=disks,
        claims=await asyncio.to_thread(read_claims, database) if database else None,
    )
    if probes is not None:
        await _probe(snapshot, probes)
    return snapshot


async def _guests(agents: AgentClient, url: str | None) -> list[GuestCopy] | None:
    if not url:
        return None
    try:
        reports = await agents.guests(url)
    except AgentUnavailable:
        return None
    return [GuestCopy(g.id, g.name, g.power) for g in reports]


async def _disks(agents: AgentClient, url: str | None) -> HostDisks | None:
    """The host's instance disks; None when it has no storage or its agent does not answer
    (the agent check reports the silence)."""
    if not url:
        return None
    try:
        storage = await agents.disks(url)
    except AgentUnavailable:
        return None
    if storage is None:
        return None
    return HostDisks(storage.kind, storage.pool, frozenset(storage.instance_ids))


async def _probe(snapshot: Snapshot, probes: Probes) -> None:
    if probes.ip_answers is not None:
        running = [i for i in snapshot.live() if i.state == "running"]
        answers = await asyncio.gather(*(probes.ip_answers(i) for i in running))
        snapshot.answers = {i.name: ok for i, ok in zip(running, answers, strict=True)}
    if probes.leaks is not None:
        for host, guests in snapshot.guests.items():
            if guests is not None:
                leaked = await probes.leaks(host, guests)
                if leaked:
                    snapshot.leaks[host] = leaked
    if probes.disk is not None:
        snapshot.disk_readings = await read_disks(probes.disk, snapshot.live())


async def read_disks(read: ReadDisk, instances: list[InstanceRecord]) -> dict[str, DiskReading]:
    """Instance id -> its disk as read on its host, for the instances with a disk there."""
    with_disk = [i for i in instances if i.image is not None and i.host is not None]
    readings = await asyncio.gather(*(read(i.host or "", i.id) for i in with_disk))
    return {i.id: r for i, r in zip(with_disk, readings, strict=True) if r is not None}


async def disks_before(api: ControllerApi, probes: Probes | None) -> dict[str, str]:
    """Instance id -> the digest of its disk as it is now (before the drain), where the
    backend reads disks and their content can be compared."""
    if probes is None or probes.disk is None:
        return {}
    instances = [instance_record(i) for i in await api.call("GET", "/v1/instances")]
    readings = await read_disks(probes.disk, instances)
    return {i: r.digest for i, r in readings.items() if r.digest is not None}


def read_claims(database: Path) -> list[Claim]:
    """Every allocation, from the controller's SQLite database opened read-only."""
    uri = f"file:{database}?mode=ro"
    with sqlite3.connect(uri, uri=True, timeout=10) as db:
        rows = db.execute(
            "SELECT a.instance_id, h.name, a.migration_id FROM allocations a "
            "JOIN hosts h ON h.id = a.host_id ORDER BY a.instance_id, h.name"
        ).fetchall()
    return [Claim(str(i), str(h), str(m) if m is not None else None) for i, h, m in rows]


def instance_record(raw: dict[str, Any]) -> InstanceRecord:
    return InstanceRecord(
        id=raw["id"],
        name=raw["name"],
        state=raw["state"],
        host=raw["host"],
        vcpus=raw["vcpus"],
        ram_mb=raw["ram_mb"],
        disk_gb=raw["disk_gb"],
        ips=tuple(p["ip"] for p in raw.get("ports", [])),
        image=raw.get("image"),
    )


def _host(raw: dict[str, Any]) -> HostRecord:
    used = raw.get("used")
    return HostRecord(
        name=raw["name"],
        maintenance=raw["maintenance"]["state"],
        liveness=raw["liveness"],
        used=(used["vcpus"], used["ram_mb"], used["disk_gb"]) if used else None,
    )


def _migration(raw: dict[str, Any]) -> MigrationRecord:
    return MigrationRecord(
        id=raw["id"],
        instance_id=raw["instance_id"],
        instance=raw["instance"],
        source=raw["source"],
        destination=raw["destination"],
        state=raw["state"],
        leftover=raw.get("leftover"),
        error=raw.get("error"),
    )
