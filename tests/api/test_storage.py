"""Instance storage in placement: a shared pool's space is counted once for all its hosts, an
instance with a disk moves only within its pool (RAM only), and one on local storage moves to
another host's local storage that has room for its copy (the reason named when none has)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update

from ferry.db.models import Instance
from tests.api.conftest import Api, registration
from tests.api.test_images import created, qcow2

CAPS = {**registration()["capabilities"], "networks": ["lab"]}
INVENTORY = {"vcpus": 32, "ram_mb": 65536, "disk_gb": 10}


async def _host(api: Api, name: str, pool: str = "") -> None:
    storage = {"kind": "shared" if pool else "local", "pool": pool, "total_gb": 10, "free_gb": 9}
    response = await api.register(name, capabilities=CAPS, inventory=INVENTORY, storage=storage)
    assert response.status_code == 200, response.text


async def _cluster(api: Api, tmp_path: Path) -> None:
    """node-a and node-b share pool p1 (10 GiB); node-c has its own disk."""
    await _host(api, "node-a", "p1")
    await _host(api, "node-b", "p1")
    await _host(api, "node-c")
    operator = await api.token("operator")
    for path, body in (
        ("/v1/flavors", {"name": "d4", "vcpus": 1, "ram_mb": 512, "disk_gb": 4}),
        ("/v1/networks", {"name": "lab", "cidr": "10.9.0.0/16", "gateway": "10.9.0.1"}),
    ):
        assert (await api.call("POST", path, operator, json=body)).status_code == 201
    await created(api, "img", qcow2(tmp_path / "img.qcow2", "1G"))


async def _create(api: Api, name: str, host: str, image: str | None = "img") -> httpx.Response:
    body: dict[str, Any] = {"name": name, "flavor": "d4", "network": "lab", "host": host}
    if image:
        body["image"] = image
    return await api.call("POST", "/v1/instances", await api.token("operator"), json=body)


async def _running(api: Api) -> None:
    async with api.controller.db.writing() as session:  # as if the agents reported them
        await session.execute(update(Instance).values(state="running"))


async def _migrate(api: Api, name: str, host: str | None = None) -> httpx.Response:
    body = {"host": host} if host else {}
    path = f"/v1/instances/{name}/migrate"
    return await api.call("POST", path, await api.token("operator"), json=body)


async def test_hosts_show_their_storage(api: Api, tmp_path: Path) -> None:
    await _cluster(api, tmp_path)
    shared = (await api.host("node-a"))["storage"]
    assert shared == {"kind": "shared", "pool": "p1", "free_gb": 9}
    assert (await api.host("node-c"))["storage"] == {"kind": "local", "pool": "", "free_gb": 9}
    agent = await api.token("agent")
    beat = await api.call(
        "POST", "/v1/agent/hosts/node-a/heartbeat", agent, json={"storage_free_gb": 3}
    )
    assert beat.status_code == 200
    assert (await api.host("node-a"))["storage"]["free_gb"] == 3
    bad = {"kind": "shared", "pool": "", "total_gb": 1, "free_gb": 1}
    refused = await api.register("node-d", capabilities=CAPS, storage=bad)
    assert refused.status_code == 422 and "names its pool" in refused.text


async def test_a_shared_pool_holds_what_its_space_holds_across_its_hosts(
    api: Api, tmp_path: Path
) -> None:
    await _cluster(api, tmp_path)
    assert (await _create(api, "vm1", "node-a")).status_code == 201
    assert (await _create(api, "vm2", "node-b")).status_code == 201
    full = await _create(api, "vm3", "node-a")  # 8 of 10 GiB of p1 are taken, by two hosts
    assert full.status_code == 409 and "not enough free disk: 1" in full.json()["message"]
    assert (await _create(api, "vm3", "node-c")).status_code == 201  # its own 10 GiB
    instance = await api.ok("GET", "/v1/instances/vm1", api.admin)
    assert instance["disk_gb"] == 4


async def test_a_pool_disk_moves_within_its_pool_only(api: Api, tmp_path: Path) -> None:
    await _cluster(api, tmp_path)
    assert (await _create(api, "vm1", "node-a")).status_code == 201
    assert (await _create(api, "vm2", "node-b")).status_code == 201
    await _running(api)
    # node-b's pool is full (8 of 10 GiB), but the disk is in the pool already: no space needed.
    moved = await _migrate(api, "vm1")
    assert moved.status_code == 202, moved.text
    assert moved.json()["destination"] == "node-b"
    elsewhere = await _migrate(api, "vm2", "node-c")
    assert elsewhere.status_code == 409
    assert (
        "cannot hold the instance's disk (another shared pool, or not local storage): 1"
        in (elsewhere.json()["message"])
    )


async def test_a_local_disk_moves_only_to_local_storage_with_room(api: Api, tmp_path: Path) -> None:
    await _cluster(api, tmp_path)
    assert (await _create(api, "vm1", "node-c")).status_code == 201
    assert (await _create(api, "bare", "node-c", image=None)).status_code == 201
    await _running(api)
    nowhere = await _migrate(api, "vm1")  # node-a and node-b are a shared pool
    assert nowhere.status_code == 409
    assert nowhere.json()["message"] == (
        "cannot migrate vm1 to any other host: no valid host among 2 (cannot hold the "
        "instance's disk (another shared pool, or not local storage): 2)"
    )
    assert (await _migrate(api, "bare")).status_code == 202  # no disk: goes anywhere
    small = {**INVENTORY, "disk_gb": 3}  # less than vm1's 4 GiB disk
    response = await api.register("node-d", capabilities=CAPS, inventory=small)
    assert response.status_code == 200, response.text
    preview = await api.call(
        "POST",
        "/v1/hosts/node-c/maintenance/enter",
        await api.token("operator"),
        json={"reason": "firmware", "dry_run": True},
    )
    [unplaced] = preview.json()["plan"]["unplaced"]
    assert (unplaced["instance"], unplaced["destination"]) == ("vm1", None)
    assert "not enough free disk: 1" in unplaced["reason"], unplaced
    await _host(api, "node-e")  # local storage with 10 GiB
    moved = await _migrate(api, "vm1")
    assert moved.status_code == 202, moved.text
    assert moved.json()["destination"] == "node-e"
    disk = moved.json()["disk"]
    assert disk is None  # nothing reported yet: the copy has not started


async def _beat(api: Api, host: str, guests: list[dict[str, Any]]) -> None:
    agent = await api.token("agent")
    path = f"/v1/agent/hosts/{host}/heartbeat"
    response = await api.call("POST", path, agent, json={"guests": guests})
    assert response.status_code == 200, response.text


async def _guests(api: Api, names: list[str]) -> dict[str, str]:
    listed = await api.ok("GET", "/v1/instances", await api.token("reader"))
    return {i["name"]: i["id"] for i in listed if i["name"] in names}


async def test_a_drain_preview_counts_the_local_disks_bytes_as_reported(
    api: Api, tmp_path: Path
) -> None:
    """The bytes a drain sends: RAM, and each local disk's allocated bytes as its host last
    reported them (to the MiB), not its virtual size; a disk on shared storage stays put."""
    await _cluster(api, tmp_path)
    for name, host in (("big", "node-c"), ("small", "node-c"), ("pooled", "node-a")):
        assert (await _create(api, name, host)).status_code == 201
    await _running(api)
    ids = await _guests(api, ["big", "small", "pooled"])
    mib = 1 << 20
    report = {"big": 300 * mib + 12345, "small": 20 * mib}
    await _beat(api, "node-c", [
        {"id": ids[n], "name": n, "power": "running", "disk_bytes": b} for n, b in report.items()
    ])  # fmt: skip
    await _beat(api, "node-a", [
        {"id": ids["pooled"], "name": "pooled", "power": "running", "disk_bytes": 7 * mib}
    ])  # fmt: skip
    operator = await api.token("operator")
    body = {"reason": "firmware", "dry_run": True}
    local = await api.ok("POST", "/v1/hosts/node-c/maintenance/enter", operator, json=body)
    sizes = {i["name"]: i["disk_bytes"] for i in local["instances"]}
    assert sizes == {"big": 300 * mib, "small": 20 * mib}
    ram = 2 * 512 * mib
    assert local["to_move"] == {
        "ram_bytes": ram, "disk_bytes": 320 * mib, "total_bytes": ram + 320 * mib
    }  # fmt: skip
    shared = await api.ok("POST", "/v1/hosts/node-a/maintenance/enter", operator, json=body)
    assert shared["to_move"] == {"ram_bytes": 512 * mib, "disk_bytes": 0, "total_bytes": 512 * mib}


async def test_a_drain_moves_the_fewest_bytes_first_disks_counted(api: Api, tmp_path: Path) -> None:
    """Two instances of one flavor (the same RAM): the one with less disk data to copy goes first,
    although its name sorts last."""
    await _cluster(api, tmp_path)
    await _host(api, "node-e")  # local storage: where node-c's instances can go
    await api.stop_loop("migrations")  # scheduled moves stay scheduled: one at a time
    for name in ("a-big", "z-small"):
        assert (await _create(api, name, "node-c")).status_code == 201
    await _running(api)
    ids = await _guests(api, ["a-big", "z-small"])
    sizes = {"a-big": 900 << 20, "z-small": 10 << 20}
    await _beat(api, "node-c", [
        {"id": ids[n], "name": n, "power": "running", "disk_bytes": b} for n, b in sizes.items()
    ])  # fmt: skip
    body = {"reason": "firmware", "policy": {"max_parallel": 1}}
    await api.ok(
        "POST", "/v1/hosts/node-c/maintenance/enter", await api.token("operator"), json=body
    )

    async def scheduled() -> list[str] | None:
        kinds = await api.events(kind="migration.scheduled")
        names = [e["message"].split()[2] for e in kinds]
        return names or None

    assert await api.eventually(scheduled) == ["z-small"]
