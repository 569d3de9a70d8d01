"""Migration steps against agents that the tests control:

- abort before the stream: a migration aborted while `scheduled`, or while its destination is
  being prepared, ends `cancelled` with the guest running on its source only, the destination
  cleaned and its claim released;
- an agent slow to answer holds up its own migration only.

The controller runs whole (API, loops, database); its agent calls reach two real agent apps
(the agents' HTTP API over the fake driver) in this process, and the test runs the migration
loop's passes itself, so each abort lands in the state it names."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ferry.agent.drivers.base import GuestPower, HostFacts
from ferry.agent.drivers.fake import FakeDriver
from ferry.agent.server import create_agent_app
from ferry.db.models import Allocation
from tests.api.conftest import Api

FACTS = HostFacts(8, 16384, 100, "qemu64", "7.2", "pc-q35-7.2")
CAPS = {"cpu_model": "qemu64", "qemu_version": "7.2", "machine_type": "pc-q35-7.2",
        "networks": ["lab"]}  # fmt: skip


class Agents(httpx.AsyncBaseTransport):
    """Routes the controller's agent calls to each host's agent app, by URL host name. A call
    to a path in `held` waits until the test releases it."""

    def __init__(self, drivers: dict[str, FakeDriver]) -> None:
        self.apps = {
            name: httpx.ASGITransport(app=create_agent_app(driver, name))
            for name, driver in drivers.items()
        }
        self.held: dict[str, asyncio.Event] = {}
        self.arrived: dict[str, asyncio.Event] = {}
        self.calls: Counter[str] = Counter()  # request paths

    def hold(self, path_end: str) -> tuple[asyncio.Event, asyncio.Event]:
        """(arrived, release) for the next calls whose path ends with `path_end`."""
        self.held[path_end], self.arrived[path_end] = asyncio.Event(), asyncio.Event()
        return self.arrived[path_end], self.held[path_end]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls[request.url.path] += 1
        for path_end, release in self.held.items():
            if request.url.path.endswith(path_end):
                self.arrived[path_end].set()
                await release.wait()
        return await self.apps[request.url.host].handle_async_request(request)


@pytest.fixture
async def cluster(api: Api) -> AsyncIterator[tuple[Api, dict[str, FakeDriver], Agents]]:
    """node-1 and node-2 with fake agents; vm1 running on node-1; the migration loop stopped."""
    drivers = {name: FakeDriver(FACTS) for name in ("node-1", "node-2")}
    agents = Agents(drivers)
    await api.controller.agents.close()
    api.controller.agents._http = httpx.AsyncClient(transport=agents)
    for name in drivers:
        url = f"https://{name}"
        response = await api.register(name, capabilities=CAPS, agent_url=url)
        assert response.is_success, response.text
    operator = await api.token("operator")
    for path, made in (
        ("/v1/flavors", {"name": "m1", "vcpus": 1, "ram_mb": 512, "disk_gb": 1}),
        ("/v1/networks", {"name": "lab", "cidr": "198.19.0.0/16"}),
        ("/v1/instances", {"name": "vm1", "flavor": "m1", "network": "lab", "host": "node-1"}),
    ):
        assert (await api.call("POST", path, operator, json=made)).status_code == 201

    async def running() -> bool:
        return bool((await api.ok("GET", "/v1/instances/vm1", api.admin))["state"] == "running")

    await api.eventually(running)
    await api.stop_loop("migrations")
    yield api, drivers, agents


async def _migrate(api: Api, name: str = "vm1") -> dict[str, Any]:
    operator = await api.token("operator")
    answer = await api.call(
        "POST", f"/v1/instances/{name}/migrate", operator, json={"host": "node-2"}
    )
    assert answer.status_code in (200, 201, 202), answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _abort(api: Api, migration_id: str) -> dict[str, Any]:
    operator = await api.token("operator")
    body: dict[str, Any] = await api.ok("POST", f"/v1/migrations/{migration_id}/abort", operator)
    return body


async def _assert_on_source_only(api: Api, drivers: dict[str, FakeDriver], mig: str) -> None:
    m = await api.ok("GET", f"/v1/migrations/{mig}", api.admin)
    assert m["state"] == "cancelled" and m["leftover"] is None, m
    instance = await api.ok("GET", "/v1/instances/vm1", api.admin)
    assert (instance["host"], instance["state"]) == ("node-1", "running"), instance
    source, dest = drivers["node-1"], drivers["node-2"]
    assert [(g.name, g.power) for g in await source.list()] == [("vm1", GuestPower.RUNNING)]
    assert await dest.list() == []  # no incoming copy left
    assert (await source.migration_status(instance["id"])).status in ("none", "cancelled")
    async with api.controller.db.writing() as session:
        claims = (await session.scalars(select(Allocation))).all()
    assert [c.migration_id for c in claims] == [None]  # the instance's own claim, on node-1
    assert "migration.running" not in await api.kinds(kind="migration")


async def test_an_abort_while_scheduled_cancels_before_anything_starts(
    cluster: tuple[Api, dict[str, FakeDriver], Agents],
) -> None:
    api, drivers, _agents = cluster
    m = await _migrate(api)
    assert m["state"] == "scheduled"
    aborted = await _abort(api, m["id"])
    assert aborted["state"] == "scheduled" and aborted["cancel_requested"] is True
    await api.controller.migrator.step()
    await _assert_on_source_only(api, drivers, m["id"])
    assert await api.kinds(kind="migration") == [
        "migration.scheduled",
        "migration.abort_requested",
        "migration.cancelled",
    ]


async def test_an_abort_while_the_destination_prepares_stops_before_the_stream(
    cluster: tuple[Api, dict[str, FakeDriver], Agents],
) -> None:
    """The abort comes while the destination's QEMU is being started: that pass records the
    preparation but starts no stream, and the next one unwinds it."""
    api, drivers, agents = cluster
    m = await _migrate(api)
    arrived, release = agents.hold("/incoming")
    first = asyncio.create_task(api.controller.migrator.step())
    await asyncio.wait_for(arrived.wait(), 5)
    await _abort(api, m["id"])
    release.set()
    await asyncio.wait_for(first, 5)
    after_first = await api.ok("GET", f"/v1/migrations/{m['id']}", api.admin)
    assert after_first["state"] == "preparing", after_first  # prepared, but not started
    assert len(await drivers["node-2"].list()) == 1  # the incoming copy, for now
    await api.controller.migrator.step()
    await _assert_on_source_only(api, drivers, m["id"])
    assert await api.kinds(kind="migration") == [
        "migration.scheduled",
        "migration.abort_requested",
        "migration.preparing",
        "migration.cancelled",
    ]


async def test_an_agent_slow_to_answer_holds_up_only_its_own_migration(
    cluster: tuple[Api, dict[str, FakeDriver], Agents],
) -> None:
    """A pass waits at most `straggle_s` for its steps: a step whose agent call hangs goes on
    in the background, later passes leave that migration alone (no second call), and the
    other migrations advance meanwhile (regression: one pass awaited every step, so a single
    agent slow to answer held up every migration's steps and progress readings)."""
    api, _drivers, agents = cluster
    migrator = api.controller.migrator
    migrator.straggle_s = 0.2
    operator = await api.token("operator")
    body = {"name": "vm2", "flavor": "m1", "network": "lab", "host": "node-1"}
    assert (await api.call("POST", "/v1/instances", operator, json=body)).status_code == 201

    await api.eventually(lambda: _is(_state(api, "/v1/instances/vm2"), "running"))
    slow, fast = await _migrate(api, "vm1"), await _migrate(api, "vm2")
    incoming = f"/v1/guests/{slow['instance_id']}/incoming"
    arrived, release = agents.hold(incoming)
    await asyncio.wait_for(migrator.step(), 2)  # returns while vm1's destination is held
    assert arrived.is_set()
    # vm2 moves on, pass after pass, while vm1's call still waits.
    assert await _passes_until_completed(api, fast["id"], 20)
    assert await _state(api, f"/v1/migrations/{slow['id']}") == "scheduled"
    assert agents.calls[incoming] == 1  # the waiting step was not started again
    release.set()
    assert await _passes_until_completed(api, slow["id"], 40)
    assert agents.calls[incoming] == 1


async def _is(value: Awaitable[str], wanted: str) -> bool:
    return await value == wanted


async def _passes_until_completed(api: Api, migration_id: str, passes: int) -> bool:
    """Run migration passes (each bounded by 2 s) until the migration completed, at most
    `passes` of them; whether it did."""
    path = f"/v1/migrations/{migration_id}"
    for _ in range(passes):
        if await _state(api, path) == "completed":
            return True
        await asyncio.wait_for(api.controller.migrator.step(), 2)
        await asyncio.sleep(0.1)
    return await _state(api, path) == "completed"


async def _state(api: Api, path: str) -> str:
    return str((await api.ok("GET", path, api.admin))["state"])
