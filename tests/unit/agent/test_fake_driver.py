"""The fake driver keeps the Driver contract: idempotent spawn and destroy, capacity refusals
that say what is free, and re-attach to its guests after an agent restart. Then the agent's HTTP
API (create_agent_app) over it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.agent.drivers.base import DriverError, GuestPower, GuestSpec, HostFacts, PortSpec
from ferry.agent.drivers.fake import FakeDriver
from ferry.agent.server import create_agent_app

FACTS = HostFacts(4, 1024, 50, "qemu64", "7.2", "pc-q35-7.2")
PORT = PortSpec("default", "52:54:00:00:00:01", "198.19.0.2/16", "198.19.0.1")


def spec(number: int, name: str | None = None, ram_mb: int = 256, ports: int = 1) -> GuestSpec:
    return GuestSpec(
        id=f"00000000-0000-0000-0000-{number:012d}",
        name=name or f"vm{number}",
        vcpus=1,
        ram_mb=ram_mb,
        ports=(PORT,) * ports,
    )


def saved(state: Path) -> Any:
    return json.loads(state.read_text())


def files(directory: Path) -> list[Path]:
    return list(directory.iterdir())


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "fake-guests.json"


async def test_spawn_returns_a_running_guest_with_one_tap_per_port(state: Path) -> None:
    driver = FakeDriver(FACTS, state)
    status = await driver.spawn(spec(1, ports=2))
    assert (status.id, status.name, status.power) == (spec(1).id, "vm1", GuestPower.RUNNING)
    assert len(status.taps) == 2 and len(set(status.taps)) == 2
    assert await driver.get(spec(1).id) == status
    assert await driver.facts() == FACTS


async def test_spawn_twice_is_idempotent(state: Path) -> None:
    driver = FakeDriver(FACTS, state)
    first = await driver.spawn(spec(1, ram_mb=768))
    again = await driver.spawn(spec(1, ram_mb=768))  # a second 768 MiB would not fit
    assert again == first
    assert [g.id for g in await driver.list()] == [spec(1).id]


async def test_destroy_removes_and_unknown_id_succeeds(state: Path) -> None:
    driver = FakeDriver(FACTS, state)
    await driver.spawn(spec(1))
    await driver.destroy(spec(1).id)
    await driver.destroy(spec(1).id)  # twice: still fine
    await driver.destroy("ffffffff-0000-0000-0000-000000000000")
    assert await driver.list() == []
    assert await driver.get(spec(1).id) is None
    assert saved(state)["guests"] == []


async def test_capacity_refusal_names_the_free_memory(state: Path) -> None:
    driver = FakeDriver(FACTS, state)
    await driver.spawn(spec(1, ram_mb=700))
    with pytest.raises(DriverError, match=r"^cannot start big: 400 MiB requested, 324 MiB free"):
        await driver.spawn(spec(2, "big", ram_mb=400))
    assert [g.name for g in await driver.list()] == ["vm1"]
    await driver.destroy(spec(1).id)  # destroy frees the memory again
    assert (await driver.spawn(spec(2, "big", ram_mb=1024))).power is GuestPower.RUNNING


async def test_state_survives_an_agent_restart(state: Path) -> None:
    before = FakeDriver(FACTS, state)
    first = await before.spawn(spec(1))
    await before.spawn(spec(2))
    after = FakeDriver(FACTS, state)  # the agent restarted: same state file, new driver
    assert await after.list() == await before.list()
    assert await after.get(spec(1).id) == first
    assert await after.spawn(spec(1)) == first  # re-attached, not restarted
    await after.destroy(spec(2).id)
    assert [g.name for g in await FakeDriver(FACTS, state).list()] == ["vm1"]


async def test_reattached_guests_still_count_against_capacity(state: Path) -> None:
    await FakeDriver(FACTS, state).spawn(spec(1, ram_mb=768))
    restarted = FakeDriver(FACTS, state)
    with pytest.raises(DriverError, match="256 MiB free"):
        await restarted.spawn(spec(2, ram_mb=768))


async def test_without_a_state_file_nothing_is_written(tmp_path: Path) -> None:
    driver = FakeDriver(FACTS)
    await driver.spawn(spec(1))
    assert [g.name for g in await driver.list()] == ["vm1"]
    assert files(tmp_path) == []
    assert await FakeDriver(FACTS).list() == []


async def test_list_is_sorted_by_name(state: Path) -> None:
    driver = FakeDriver(FACTS, state)
    for number, name in enumerate(["web-2", "db", "web-10", "api"], start=1):
        await driver.spawn(spec(number, name, ram_mb=64))
    assert [g.name for g in await driver.list()] == ["api", "db", "web-10", "web-2"]
    assert [g.name for g in await FakeDriver(FACTS, state).list()] == [
        "api",
        "db",
        "web-10",
        "web-2",
    ]


# The agent's HTTP API over the fake driver.

GUEST_BODY: dict[str, Any] = {
    "id": spec(1).id,
    "name": "vm1",
    "vcpus": 1,
    "ram_mb": 256,
    "ports": [{"network": "default", "mac": PORT.mac, "ip": PORT.ip, "gateway": PORT.gateway}],
}


@pytest.fixture
async def agent(state: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_agent_app(FakeDriver(FACTS, state), "host1")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://agent.test") as client:
        yield client


async def test_agent_api_spawn_list_destroy(agent: httpx.AsyncClient) -> None:
    facts = (await agent.get("/v1/facts")).json()
    assert (facts["host"], facts["driver"], facts["ram_mb"]) == ("host1", "fake", 1024)
    created = await agent.post("/v1/guests", json=GUEST_BODY)
    assert created.status_code == 201
    report = {
        "id": spec(1).id,
        "name": "vm1",
        "power": "running",
        "pid": None,
        "detail": "",
        "disk_bytes": None,
    }
    assert created.json() == report
    assert (await agent.post("/v1/guests", json=GUEST_BODY)).json() == report  # idempotent
    assert (await agent.get("/v1/guests")).json() == [report]
    deleted = await agent.delete(f"/v1/guests/{spec(1).id}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await agent.delete(f"/v1/guests/{spec(1).id}")).status_code == 204
    assert (await agent.get("/v1/guests")).json() == []


@pytest.mark.parametrize(
    "change",
    [
        {"id": "not-a-uuid"},
        {"vcpus": 0},
        {"ram_mb": 32},
        {"name": "x" * 64},
        {"ports": [{"network": "default", "mac": "52-54-00-00-00-01", "ip": "198.19.0.2/16"}]},
        {"ports": [{"network": "Bad_Net", "mac": PORT.mac, "ip": "198.19.0.2/16"}]},
        {"surprise": True},
    ],
)
async def test_agent_api_rejects_bad_bodies(
    agent: httpx.AsyncClient, change: dict[str, Any]
) -> None:
    response = await agent.post("/v1/guests", json={**GUEST_BODY, **change})
    assert response.status_code == 422, response.text
    assert (await agent.get("/v1/guests")).json() == []


async def test_agent_api_reports_driver_errors_as_409(agent: httpx.AsyncClient) -> None:
    response = await agent.post("/v1/guests", json={**GUEST_BODY, "ram_mb": 2048})
    assert response.status_code == 409
    assert response.json() == {
        "error": "driver",
        "message": "cannot start vm1: 2048 MiB requested, 1024 MiB free on this simulated host",
    }
