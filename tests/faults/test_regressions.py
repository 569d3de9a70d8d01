"""Bugs the fault runs found, each pinned by a test:

- a restarted controller counted its own absence against the hosts: heartbeats it could not
  receive made every host `down` at once, and a drain in progress failed ("the agent of host2
  is down") although no agent had stopped;
- a migration whose destination lost the guest after the source handed it over (a paused
  source, a dead incoming QEMU) waited forever: its drain never ended;
- an instance moved cold (its guest dead) left the dead guest's remains on the old host (QEMU's
  run directory and taps): nothing ever removed them;
- a source whose QEMU died right after it handed the guest over (the destination had it whole
  and ran it) was judged "neither end runs it": the migration failed, the destination's copy was
  removed (QEMU refuses that: a leftover for ever), the instance went to error;
- a guest that died just before its drain reached it was tried live on one destination after
  another ("does not run on this host"), each failure barring that destination, so once it was
  known dead no host was left to move it cold to: the drain failed.

- an instance whose disk is on its host's local storage and whose guest died (source-guest-kill
  at the mirror, prepare or transfer phase on local storage; `ferry faults run --runs 1 --seed 3`)
  was moved cold: its record went to another host, and the cold move's leftover clean-up
  (`finish-source` on the old host) removed its only disk (`disk-lost`). A dead guest's local
  disk cannot move without a copy: such an instance now stays, and its drain fails naming it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ferry.agent_client import AgentClient
from ferry.domain.migration import MigrationState
from ferry.faults.cluster import FakeCluster
from ferry.faults.collect import take_snapshot
from ferry.faults.invariants import Kind, check
from ferry.faults.runner import fake_probes
from ferry.orchestrator.migration.judge import Sighting, Verdict, judge
from tests.api.conftest import Api, Launch

# -- liveness after a controller restart -------------------------------------------------------


async def _names(api: Api, liveness: str) -> list[str]:
    hosts = await api.ok("GET", "/v1/hosts", api.admin, params={"liveness": liveness})
    return [h["name"] for h in hosts]


@pytest.mark.parametrize("heartbeat_interval", [1.0])
async def test_a_restarted_controller_does_not_count_its_own_absence(launch: Launch) -> None:
    async with launch() as first:
        await first.register("node-1")
        await first.register("node-2")

        async def node_2_down() -> list[dict[str, Any]]:
            await first.heartbeat("node-1")
            return await first.events(kind="host.down", host="node-2")

        await first.eventually(node_2_down, within=15)  # node-2 stopped before the controller
    await asyncio.sleep(4.0)  # the controller is away for 4 heartbeat intervals
    async with launch() as second:
        await asyncio.sleep(0.6)  # liveness passes of the new controller
        assert (await second.host("node-1"))["liveness"] == "up"
        assert await _names(second, "up") == ["node-1"]
        assert await _names(second, "down") == ["node-2"]  # known down: stays down
        assert await second.kinds(kind="host.down", host="node-1") == []

        async def node_1_down() -> list[dict[str, Any]]:
            return await second.events(kind="host.down", host="node-1")

        await second.eventually(node_1_down, within=15)  # silent for a window of listening
        assert await _names(second, "down") == ["node-1", "node-2"]


# -- the destination loses the guest after the hand-over ---------------------------------------


def test_a_guest_lost_by_its_destination_after_the_hand_over_is_not_waited_for_forever() -> None:
    switching = MigrationState.SWITCHING
    for dest in (Sighting("host2", "stopped"), Sighting("host2", None)):
        waiting = judge(switching, Sighting("host1", "paused"), dest, 2, patience_s=3)
        assert waiting.verdict is Verdict.WAIT  # the source may yet resume by itself
        lost = judge(switching, Sighting("host1", "paused"), dest, 4, patience_s=3)
        assert lost.verdict is Verdict.LOST
        assert lost.reason.startswith("the destination lost it after the hand-over")
    silent = Sighting("host2", trouble="unreachable")
    assert judge(switching, Sighting("host1", "paused"), silent, 3600, 3).verdict is Verdict.WAIT


def test_a_source_dead_after_the_hand_over_leaves_the_guest_where_it_arrived() -> None:
    arrived = Sighting("host2", "incoming", arrived=True)
    for state in (MigrationState.RUNNING, MigrationState.SWITCHING):
        for source in (
            Sighting("host1", "stopped"),
            Sighting("host1"),
            Sighting("host1", "paused"),
        ):
            found = judge(state, source, arrived, 0, 60)
            assert found.verdict is Verdict.MOVED, (state, source)
        assert judge(state, Sighting("host1", "running"), arrived, 0, 60).verdict is Verdict.WAIT
    waiting = Sighting("host2", "incoming")  # still waiting for the stream: nobody runs it
    lost = judge(MigrationState.RUNNING, Sighting("host1", "stopped"), waiting, 0, 60)
    assert lost.verdict is Verdict.LOST
    assert str(arrived) == "host2 has it incoming, arrived and running"
    # in post-copy a running target still needs its source: nothing is concluded
    postcopy = judge(MigrationState.POSTCOPY, Sighting("host1", "stopped"), arrived, 0, 60)
    assert postcopy.verdict is Verdict.WAIT


async def _boot(cluster: FakeCluster, name: str, host: str = "host1") -> dict[str, Any]:
    body = {"name": name, "flavor": "tiny", "network": "default", "host": host}
    await cluster.call("POST", "/v1/instances", json=body)
    running: dict[str, Any] = await _until(
        cluster, f"/v1/instances/{name}", lambda i: i["state"] == "running"
    )
    return running


async def _until(cluster: FakeCluster, path: str, ok: Any, within: float = 60) -> Any:
    for _ in range(int(within / 0.1)):
        body = await cluster.call("GET", path)
        if ok(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never got there: {body}")


async def _fake(cluster: FakeCluster, host: str, path: str) -> Any:
    response = await cluster.agent_http.post(cluster.agent_urls[host] + path)
    assert response.is_success, response.text
    return response.json() if response.content else None


async def _consistent(cluster: FakeCluster) -> None:
    agents = AgentClient(cluster.controller_tls())
    try:
        snapshot = await take_snapshot(cluster, agents, cluster.database)
    finally:
        await agents.close()
    assert [str(v) for v in check(snapshot)] == []


async def test_a_destination_dead_after_the_hand_over_fails_the_migration(
    cluster: FakeCluster,
) -> None:
    vm = await _boot(cluster, "vm1")
    await cluster.kill_controller()  # so that the hand-over happens before it can act
    # what the controller does before it streams: a target on host2, then the stream
    policy = {"max_bandwidth_mib": 64, "no_progress_s": 1}
    migration = await _migrate_while_away(cluster, vm, policy)
    await _fake(cluster, "host2", f"/v1/fake/guests/{vm['id']}/crash")  # the target dies
    await cluster.start_controller()
    ended = await _until(
        cluster, f"/v1/migrations/{migration}", lambda m: m["state"] in ("failed", "completed")
    )
    assert ended["state"] == "failed", ended
    assert ended["error"].startswith("the destination lost it after the hand-over"), ended
    assert (await cluster.call("GET", "/v1/instances/vm1"))["state"] == "error"
    await _consistent(cluster)


async def _migrate_while_away(
    cluster: FakeCluster, vm: dict[str, Any], policy: dict[str, Any]
) -> str:
    """Start a migration of `vm` from host1 to host2 with the controller down: its record says
    `running` (written before the kill, as the loop does), the source streams to completion."""
    await cluster.start_controller()
    body = {"host": "host2", "policy": policy}
    migration = await cluster.call("POST", f"/v1/instances/{vm['name']}/migrate", json=body)
    await _until(cluster, f"/v1/migrations/{migration['id']}", lambda m: m["state"] == "running")
    await cluster.kill_controller()
    url = f"{cluster.agent_urls['host1']}/v1/guests/{vm['id']}/migration"
    for _ in range(200):  # 128 MiB at 64 MiB/s: 2 s
        if (await cluster.agent_http.get(url)).json()["status"] == "completed":
            return str(migration["id"])
        await asyncio.sleep(0.05)
    raise AssertionError("the stream did not complete")


# -- a cold move removes what the dead guest left ----------------------------------------------


async def test_a_cold_move_removes_the_dead_guests_remains_from_the_old_host(
    cluster: FakeCluster,
) -> None:
    vm = await _boot(cluster, "vm1")
    await _fake(cluster, "host1", f"/v1/fake/guests/{vm['id']}/crash")
    await _until(cluster, "/v1/instances/vm1", lambda i: i["state"] == "error")
    body = {"reason": "kernel", "policy": {"retry_backoff_s": 0.2}}
    await cluster.call("POST", "/v1/hosts/host1/maintenance/enter", json=body)
    status = await _until(
        cluster,
        "/v1/hosts/host1/maintenance",
        lambda s: s["maintenance"]["state"] != "draining",
    )
    assert status["maintenance"]["state"] == "in_maintenance", status["drain"]
    [move] = [m for m in status["migrations"] if m["state"] == "completed"]
    assert move["kind"] == "cold" and move["destination"] == "host2"
    cleaned = await _until(cluster, f"/v1/migrations/{move['id']}", lambda m: not m["leftover"])
    assert cleaned["error"] is None
    guests = await cluster.agent_http.get(cluster.agent_urls["host1"] + "/v1/guests")
    assert guests.json() == []  # the stopped copy is gone from host1
    events = await cluster.call("GET", "/v1/events?order=asc&kind=migration&limit=1000")
    kinds = [e["kind"] for e in events["items"] if e["migration_id"] == move["id"]]
    assert kinds[-2:] == ["migration.leftover", "migration.cleaned"], kinds
    await _consistent(cluster)


# -- a guest dead before its stream moves cold, not live again and again -----------------------


async def test_a_guest_dead_before_its_stream_fails_once_and_moves_cold(
    cluster: FakeCluster,
) -> None:
    vm = await _boot(cluster, "vm1")
    await _fake(cluster, "host1", f"/v1/fake/guests/{vm['id']}/crash")
    body = {"reason": "kernel", "policy": {"retry_backoff_s": 0.2}}  # before a report says so
    await cluster.call("POST", "/v1/hosts/host1/maintenance/enter", json=body)
    status = await _until(
        cluster,
        "/v1/hosts/host1/maintenance",
        lambda s: s["maintenance"]["state"] != "draining",
    )
    assert status["maintenance"]["state"] == "in_maintenance", status["drain"]
    moves = [(m["kind"], m["state"]) for m in status["migrations"]]
    assert moves[-1] == ("cold", "completed") and len(moves) <= 2, status["migrations"]
    if len(moves) == 2:  # the drain was first: one live try, failed as lost at once
        assert status["migrations"][0]["error"].startswith("the source does not run it")
    inst = await cluster.call("GET", "/v1/instances/vm1")
    assert (inst["state"], inst["host"]) == ("error", "host2")
    await _until(cluster, "/v1/migrations?limit=10", lambda ms: not any(m["leftover"] for m in ms))
    await _consistent(cluster)


# -- the source dies right after handing the guest over ----------------------------------------


async def test_a_source_dead_after_the_hand_over_completes_the_move(cluster: FakeCluster) -> None:
    vm = await _boot(cluster, "vm1")
    await cluster.kill_controller()
    migration = await _migrate_while_away(cluster, vm, {"max_bandwidth_mib": 64})
    await _fake(cluster, "host1", f"/v1/fake/guests/{vm['id']}/crash")  # after the hand-over
    await _fake(cluster, "host2", f"/v1/fake/guests/{vm['id']}/arrive")  # the guest runs there
    await cluster.start_controller()
    ended = await _until(
        cluster, f"/v1/migrations/{migration}", lambda m: m["state"] in ("failed", "completed")
    )
    assert (ended["state"], ended["leftover"]) == ("completed", None), ended
    inst = await cluster.call("GET", "/v1/instances/vm1")
    assert (inst["state"], inst["host"]) == ("running", "host2")
    await _consistent(cluster)


# -- a dead guest's local disk must not be moved cold -----------------------------------------


async def test_a_dead_guests_local_disk_is_not_lost_by_a_cold_move(tmp_path: Path) -> None:
    cluster = FakeCluster(tmp_path, hosts=2, storage="local")
    try:
        await cluster.start()
        await cluster.call("POST", "/v1/flavors", json={"name": "tiny", "vcpus": 1, "ram_mb": 128})
        await cluster.call(
            "POST", "/v1/networks", json={"name": "default", "cidr": "10.240.0.0/16"}
        )
        body = {"name": "vm1", "flavor": "tiny", "network": "default", "host": "host1"}
        await cluster.call("POST", "/v1/instances", json={**body, "image": cluster.image})
        vm = await _until(cluster, "/v1/instances/vm1", lambda i: i["state"] == "running")
        assert cluster.disk_path("host1", vm["id"]).is_file()
        await _fake(cluster, "host1", f"/v1/fake/guests/{vm['id']}/crash")
        await _until(cluster, "/v1/instances/vm1", lambda i: i["state"] == "error")
        enter = {"reason": "kernel", "policy": {"retry_backoff_s": 0.2}}
        await cluster.call("POST", "/v1/hosts/host1/maintenance/enter", json=enter)
        status = await _until(
            cluster,
            "/v1/hosts/host1/maintenance",
            lambda s: s["maintenance"]["state"] != "draining",
        )
        assert status["maintenance"]["state"] == "drain_failed", status
        assert (
            "vm1: it is error and its disk is on host1's local storage"
            in (status["drain"]["error"])
        ), status["drain"]
        assert cluster.disk_path("host1", vm["id"]).is_file()
        assert (await cluster.call("GET", "/v1/instances/vm1"))["host"] == "host1"
        await _until(
            cluster, "/v1/migrations?limit=10", lambda ms: not any(m["leftover"] for m in ms)
        )
        agents = AgentClient(cluster.controller_tls())
        try:
            snapshot = await take_snapshot(cluster, agents, cluster.database, fake_probes(cluster))
        finally:
            await agents.close()
        lost = [str(v) for v in check(snapshot) if v.kind is Kind.DISK_LOST]
        assert lost == [], lost
    finally:
        await cluster.stop()
