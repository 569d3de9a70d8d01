"""The snapshot of a fake cluster sees instance disks: every host of the fake cluster's shared
pool lists the disk of an instance created with the cluster's image, the instance's record
names the image, the fake backend's probe reads each disk's content where it lies (a change of
it is caught as `disk-corrupt`), an agent that does not answer has no storage to show, and a
disk left in the pool by no instance is caught as a leak."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ferry.agent_client import AgentClient
from ferry.faults.cluster import IMAGE, IMAGE_BYTES, POOL, FakeCluster
from ferry.faults.collect import Probes, disks_before, take_snapshot
from ferry.faults.invariants import HostDisks, Kind, Snapshot, check
from ferry.faults.runner import fake_probes


async def _snapshot(cluster: FakeCluster, probes: Probes | None = None) -> Snapshot:
    agents = AgentClient(cluster.controller_tls(), timeout=10)
    try:
        return await take_snapshot(cluster, agents, cluster.database, probes)
    finally:
        await agents.close()


async def _running(cluster: FakeCluster, name: str, within: float = 60) -> dict[str, Any]:
    for _ in range(int(within / 0.1)):
        inst: dict[str, Any] = await cluster.call("GET", f"/v1/instances/{name}")
        if inst["state"] == "running":
            return inst
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never ran: {inst}")


async def test_the_snapshot_lists_each_hosts_disks(cluster: FakeCluster) -> None:
    assert cluster.image == IMAGE
    body = {"name": "vm1", "flavor": "tiny", "network": "default", "host": "host1"}
    await cluster.call("POST", "/v1/instances", json={**body, "image": IMAGE})
    await cluster.call("POST", "/v1/instances", json={**body, "name": "vm2"})  # diskless
    vm1 = await _running(cluster, "vm1")
    await _running(cluster, "vm2")
    disk = cluster.pool_dir / vm1["id"] / "disk.qcow2"
    image = await cluster.call("GET", f"/v1/images/{IMAGE}")
    assert image["virtual_size_bytes"] == IMAGE_BYTES
    assert json.loads(disk.read_text())["image"] == image["sha256"]
    assert (cluster.root / "host1" / "images").is_dir()  # fetched through the agent's cache

    snapshot = await _snapshot(cluster)
    pool = HostDisks("shared", POOL, frozenset({vm1["id"]}))
    assert snapshot.disks == {"host1": pool, "host2": pool}
    assert {i.name: i.image for i in snapshot.instances} == {"vm1": IMAGE, "vm2": None}
    assert [str(v) for v in check(snapshot)] == []

    # the fake backend reads each disk where it lies: the digests before the drain, the same now
    before = await disks_before(cluster, fake_probes(cluster))
    assert list(before) == [vm1["id"]] and json.loads(disk.read_text())["data"]
    read = await _snapshot(cluster, fake_probes(cluster))
    assert {i: r.digest for i, r in read.disk_readings.items()} == before
    read.disk_before = before
    assert [str(v) for v in check(read)] == []
    disk.write_text(disk.read_text().replace('"data": "', '"data": "x'))  # the content changed
    changed = await _snapshot(cluster, fake_probes(cluster))
    changed.disk_before = before
    assert [v.kind for v in check(changed)] == [Kind.DISK_CORRUPT]

    stray = cluster.pool_dir / "00000000-0000-4000-8000-000000000000"
    stray.mkdir()
    (stray / "disk.qcow2").write_text("{}")
    await cluster.kill_agent("host2")
    snapshot = await _snapshot(cluster)
    assert snapshot.disks is not None and snapshot.disks["host2"] is None
    kinds = [v.kind for v in check(snapshot)]
    assert Kind.AGENT in kinds and Kind.DISK_LEAK in kinds
