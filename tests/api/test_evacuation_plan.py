"""Maintenance pre-check through the API: the dry run's plan and loads, refusal with reasons,
a forced partial drain, and claims that stay within capacity under concurrent requests."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm.exc import StaleDataError

from ferry.db.models import Allocation, Drain, Host, Instance
from ferry.services.placement import Placer
from tests.api.conftest import Api

GIB = 1024
CAPS = {"cpu_model": "EPYC-Rome", "qemu_version": "8.2.2", "machine_type": "pc-q35-8.2"}


async def _host(api: Api, name: str, ram_gib: int = 64, qemu: str = "8.2.2") -> None:
    response = await api.register(
        name,
        inventory={"vcpus": 32, "ram_mb": ram_gib * GIB, "disk_gb": 1000},
        capabilities={**CAPS, "qemu_version": qemu, "networks": ["lab"]},
    )
    assert response.status_code == 200, response.text


async def _cluster(api: Api, flavor_gib: int = 4) -> None:
    operator = await api.token("operator")
    flavor = {"name": "m1", "vcpus": 2, "ram_mb": flavor_gib * GIB, "disk_gb": 10}
    network = {"name": "lab", "cidr": "10.9.0.0/24", "gateway": "10.9.0.1"}
    for path, body in (("/v1/flavors", flavor), ("/v1/networks", network)):
        assert (await api.call("POST", path, operator, json=body)).status_code == 201


async def _create(api: Api, name: str, host: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"name": name, "flavor": "m1", "network": "lab"}
    if host:
        body["host"] = host
    return await api.call("POST", "/v1/instances", await api.token("operator"), json=body)


async def _on(api: Api, host: str, count: int) -> None:
    for n in range(count):
        response = await _create(api, f"vm{n}", host)
        assert response.status_code == 201, response.text
    async with api.controller.db.writing() as session:  # as if the agent reported them
        await session.execute(update(Instance).values(state="running"))


async def _enter(api: Api, host: str, **body: Any) -> httpx.Response:
    return await api.call(
        "POST",
        f"/v1/hosts/{host}/maintenance/enter",
        await api.token("operator"),
        json={"reason": "firmware", **body},
    )


async def test_dry_run_plans_every_instance_and_shows_loads(api: Api) -> None:
    for name in ("node-1", "node-2", "node-3"):
        await _host(api, name)
    await _host(api, "node-old", qemu="7.2.0")  # cannot take a guest from a newer QEMU
    await _cluster(api)
    await _on(api, "node-1", 4)

    response = await _enter(api, "node-1", dry_run=True)
    assert response.status_code == 200, response.text
    plan = response.json()["plan"]
    assert plan["complete"] is True and plan["unplaced"] == []
    where = {p["instance"]: p["destination"] for p in plan["placements"]}
    assert sorted(where) == ["vm0", "vm1", "vm2", "vm3"]
    assert Counter(where.values()) == {"node-2": 2, "node-3": 2}
    for load in plan["loads"]:
        assert load["instances"] == 2
        assert load["before"] == {"vcpus": 0, "ram_mb": 0, "disk_gb": 0}
        assert load["after"] == {"vcpus": 4, "ram_mb": 8 * GIB, "disk_gb": 20}
        assert load["utilization_after"] == 0.125  # 8 of 64 GiB is the dominant share
    assert any("pre-check passed" in note for note in response.json()["notes"])
    status = await api.ok("GET", "/v1/hosts/node-1/maintenance", api.admin)
    assert status["maintenance"]["state"] == "in_service" and status["drain"] is None


async def test_enter_is_refused_with_reasons_and_changes_nothing(api: Api) -> None:
    await _host(api, "node-1")
    await _host(api, "node-2", ram_gib=6)  # room for one 4 GiB instance
    await _host(api, "node-3")
    await api.act("node-3", "disable", {"reason": "bad DIMM"})
    await _cluster(api)
    await _on(api, "node-1", 3)
    before = await api.events()

    refused = await _enter(api, "node-1")
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["message"].startswith("cannot drain node-1: 2 of 3 instance(s) have no destination")
    assert "enter with force" in body["message"]
    assert len(body["details"]["unplaced"]) == 2
    for why in body["details"]["unplaced"].values():
        # the host being drained is not a candidate; of the two others, one is disabled and
        # the other holds one instance and has no room for a second
        assert why == "no valid host among 2 (host disabled: 1, not enough free RAM: 1)"
    status = await api.ok("GET", "/v1/hosts/node-1/maintenance", api.admin)
    assert status["maintenance"]["state"] == "in_service" and status["drain"] is None
    assert await api.events() == before

    preview = (await _enter(api, "node-1", dry_run=True)).json()
    assert preview["plan"]["complete"] is False and len(preview["plan"]["unplaced"]) == 2
    assert any("pre-check failed" in note for note in preview["notes"])


async def test_force_enters_and_the_drain_keeps_the_plan(api: Api) -> None:
    await _host(api, "node-1")
    await _host(api, "node-2", ram_gib=6)
    await _cluster(api)
    await _on(api, "node-1", 2)
    entered = await _enter(api, "node-1", force=True)
    assert entered.status_code == 200, entered.text
    drain = entered.json()["drain"]
    assert entered.json()["maintenance"]["state"] == "draining" and drain["force"] is True
    moving = [e for e in drain["plan"] if e["destination"]]
    stuck = [e for e in drain["plan"] if not e["destination"]]
    assert [e["destination"] for e in moving] == ["node-2"]
    assert len(stuck) == 1 and "not enough free RAM: 1" in stuck[0]["reason"]
    [event] = await api.events(kind="host.maintenance.entered")
    assert event["data"]["force"] is True and list(event["data"]["unplaced"]) == [
        stuck[0]["instance"]
    ]
    async with api.controller.db.reading() as session:
        stored = await session.scalar(select(Drain))
        assert stored is not None and len(stored.plan) == 2


async def _claimed_ram(api: Api, host: str) -> int:
    async with api.controller.db.reading() as session:
        host_id = await session.scalar(select(Host.id).where(Host.name == host))
        total = await session.scalar(
            select(func.coalesce(func.sum(Allocation.ram_mb), 0)).where(
                Allocation.host_id == host_id
            )
        )
    return int(total or 0)


async def test_concurrent_creates_never_overcommit(api: Api) -> None:
    await _host(api, "node-1", ram_gib=20)  # room for exactly five 4 GiB instances
    await _cluster(api)
    results = await asyncio.gather(*(_create(api, f"vm{n}") for n in range(12)))
    codes = Counter(r.status_code for r in results)
    assert codes == {201: 5, 409: 7}
    refused = [r.json()["message"] for r in results if r.status_code == 409]
    assert all("not enough free RAM: 1" in m for m in refused)
    assert await _claimed_ram(api, "node-1") == 20 * GIB


async def test_concurrent_migrations_and_creates_share_one_destination_safely(api: Api) -> None:
    await _host(api, "node-1")
    await _host(api, "node-2", ram_gib=12)  # room for three
    await _cluster(api)
    await _on(api, "node-1", 4)
    operator = await api.token("operator")
    moves = [
        api.call("POST", f"/v1/instances/vm{n}/migrate", operator, json={"host": "node-2"})
        for n in range(4)
    ]
    creates = [_create(api, f"new{n}", "node-2") for n in range(3)]
    results = await asyncio.gather(*moves, *creates)
    assert sum(r.status_code in (201, 202) for r in results) == 3
    assert {r.status_code for r in results} <= {201, 202, 409}
    assert await _claimed_ram(api, "node-2") == 12 * GIB


async def test_a_claim_on_a_host_changed_since_it_was_read_is_refused(api: Api) -> None:
    """Two controllers sharing one database: each read the host, the first claim commits, and
    the second, decided on a stale view, must not commit (the host's version moved)."""
    await _host(api, "node-1")
    await _host(api, "node-2")
    await _cluster(api)
    await _on(api, "node-1", 2)
    db = api.controller.db
    async with db.reading() as first, db.reading() as second:
        pick = select(Host).where(Host.name == "node-2")
        seen_first, seen_second = await first.scalar(pick), await second.scalar(pick)
        vm0 = await first.scalar(select(Instance).where(Instance.name == "vm0"))
        vm1 = await second.scalar(select(Instance).where(Instance.name == "vm1"))
        assert seen_first and seen_second and vm0 and vm1
        Placer.claim(second, seen_second, vm1)
        await second.commit()
        Placer.claim(first, seen_first, vm0)
        with pytest.raises(StaleDataError):
            await first.commit()
