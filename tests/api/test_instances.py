"""Flavors, networks and instances through the API: validation, placement, addresses, deletion
by the reconcile loop, and the agents' guest reports."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ferry.db.models import Allocation, Port
from tests.api.conftest import Api

CAPS = {"cpu_model": "EPYC-Rome", "qemu_version": "8.2.2", "machine_type": "pc-q35-8.2"}
GIB = 1024
MAC = re.compile(r"^52:54:00(:[0-9a-f]{2}){3}$")


async def _host(api: Api, name: str, networks: tuple[str, ...] = ("lab",), ram_mb: int = 0) -> None:
    changes: dict[str, Any] = {"capabilities": {**CAPS, "networks": list(networks)}}
    if ram_mb:
        changes["inventory"] = {"vcpus": 32, "ram_mb": ram_mb, "disk_gb": 1000}
    response = await api.register(name, **changes)
    assert response.status_code == 200, response.text


async def _post(
    api: Api, path: str, body: dict[str, Any], role: str = "operator"
) -> httpx.Response:
    return await api.call("POST", path, await api.token(role), json=body)


async def _catalog(api: Api, gateway: str | None = "10.9.0.1", ram_mb: int = 16 * GIB) -> None:
    flavor = {"name": "m1", "vcpus": 2, "ram_mb": ram_mb, "disk_gb": 10}
    assert (await _post(api, "/v1/flavors", flavor)).status_code == 201
    network = {"name": "lab", "cidr": "10.9.0.0/24", "gateway": gateway}
    assert (await _post(api, "/v1/networks", network)).status_code == 201


async def _create(api: Api, name: str, **extra: Any) -> dict[str, Any]:
    body = {"name": name, "flavor": "m1", "network": "lab", **extra}
    response = await _post(api, "/v1/instances", body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _refused(api: Api, name: str, status: int = 409, **extra: Any) -> str:
    body = {"name": name, "flavor": "m1", "network": "lab", **extra}
    response = await _post(api, "/v1/instances", body)
    assert response.status_code == status, response.text
    message: str = response.json()["message"]
    return message


async def _claims(api: Api, instance_id: str) -> tuple[list[Allocation], list[Port]]:
    async with api.controller.db.reading() as session:
        allocs = await session.scalars(
            select(Allocation).where(Allocation.instance_id == instance_id)
        )
        ports = await session.scalars(select(Port).where(Port.instance_id == instance_id))
        return list(allocs.all()), list(ports.all())


async def _names(api: Api) -> list[str]:
    return [i["name"] for i in await api.ok("GET", "/v1/instances", api.admin)]


async def test_flavors_crud(api: Api) -> None:
    body = {"name": "m1", "vcpus": 2, "ram_mb": 2048, "disk_gb": 20}
    created = await _post(api, "/v1/flavors", body)
    assert (created.status_code, created.json()) == (201, body)
    await _post(api, "/v1/flavors", {"name": "a0", "vcpus": 1, "ram_mb": 64})
    reader = await api.token("reader")
    assert [f["name"] for f in await api.ok("GET", "/v1/flavors", reader)] == ["a0", "m1"]
    duplicate = await _post(api, "/v1/flavors", {**body, "vcpus": 4})
    assert duplicate.status_code == 409 and "'m1' exists already" in duplicate.json()["message"]
    for bad in ({**body, "name": "Big_One"}, {**body, "name": "-x"}, {**body, "vcpus": 0}):
        assert (await _post(api, "/v1/flavors", bad)).status_code == 422
    assert (
        await _post(api, "/v1/flavors", {**body, "name": "r"}, role="reader")
    ).status_code == 403
    operator = await api.token("operator")
    missing = await api.call("DELETE", "/v1/flavors/ghost", operator)
    assert missing.status_code == 404 and "no flavor named 'ghost'" in missing.json()["message"]
    assert (await api.call("DELETE", "/v1/flavors/m1", operator)).status_code == 204
    assert [f["name"] for f in await api.ok("GET", "/v1/flavors", reader)] == ["a0"]


@pytest.mark.parametrize(
    ("cidr", "gateway", "message"),
    [
        ("10.0.0.0/33", None, "invalid network range '10.0.0.0/33'"),
        ("lab", None, "invalid network range 'lab'"),
        ("10.0.0.1/24", None, "has host bits set"),
        ("fd00::/64", None, "must be IPv4"),
        ("10.0.0.0/31", None, "must be IPv4 with room for hosts"),
        ("10.0.0.0/24", "10.0.1.1", "gateway 10.0.1.1 is not a host address of 10.0.0.0/24"),
        ("10.0.0.0/24", "10.0.0.0", "gateway 10.0.0.0 is not a host address"),
        ("10.0.0.0/24", "10.0.0.255", "gateway 10.0.0.255 is not a host address"),
        ("10.0.0.0/24", "gw", "invalid gateway 'gw'"),
    ],
)
async def test_network_validation(api: Api, cidr: str, gateway: str | None, message: str) -> None:
    response = await _post(api, "/v1/networks", {"name": "lab", "cidr": cidr, "gateway": gateway})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_input" and message in response.json()["message"]
    assert await api.ok("GET", "/v1/networks", api.admin) == []


async def test_network_create_list_and_delete_refused_while_used(api: Api) -> None:
    smallest = await _post(api, "/v1/networks", {"name": "tiny", "cidr": "10.1.0.0/30"})
    assert smallest.json() == {
        "name": "tiny",
        "cidr": "10.1.0.0/30",
        "gateway": None,
        "allocation_start": None,
        "allocation_end": None,
    }
    assert (
        await _post(api, "/v1/networks", {"name": "tiny", "cidr": "10.2.0.0/24"})
    ).status_code == 409
    await _catalog(api)
    await _host(api, "node-1")
    vm = await _create(api, "vm-1")
    operator = await api.token("operator")
    refused = await api.call("DELETE", "/v1/networks/lab", operator)
    assert refused.status_code == 409 and "still has 1 port(s)" in refused.json()["message"]
    assert (await api.call("DELETE", "/v1/networks/ghost", operator)).status_code == 404
    assert (await api.call("DELETE", "/v1/instances/vm-1", operator)).status_code == 202
    await api.eventually(lambda: _gone(api, vm["id"]))
    assert (await api.call("DELETE", "/v1/networks/lab", operator)).status_code == 204
    assert [n["name"] for n in await api.ok("GET", "/v1/networks", api.admin)] == ["tiny"]


async def _gone(api: Api, instance_id: str) -> bool:
    return instance_id not in [i["id"] for i in await api.ok("GET", "/v1/instances", api.admin)]


async def test_placement_spreads_and_addresses_are_unique(api: Api) -> None:
    await _catalog(api, gateway="10.9.0.3")
    await _host(api, "node-1")
    await _host(api, "node-2")
    made = [await _create(api, f"vm-{n}") for n in range(4)]
    assert [vm["host"] for vm in made[:2]] in (["node-1", "node-2"], ["node-2", "node-1"])
    assert sorted(vm["host"] for vm in made) == ["node-1", "node-1", "node-2", "node-2"]
    ips = [vm["ports"][0]["ip"] for vm in made]
    assert ips == ["10.9.0.1", "10.9.0.2", "10.9.0.4", "10.9.0.5"]  # lowest first, gateway .3
    macs = [vm["ports"][0]["mac"] for vm in made]
    assert len(set(macs)) == 4 and all(MAC.match(mac) for mac in macs)
    first = made[0]
    assert (first["state"], first["flavor"], first["vcpus"], first["ram_mb"]) == (
        "building",
        "m1",
        2,
        16 * GIB,
    )
    assert first["created_by"] == "operator-bot" and first["error"] is None
    allocs, ports = await _claims(api, first["id"])
    assert [(a.vcpus, a.ram_mb, a.disk_gb) for a in allocs] == [(2, 16 * GIB, 10)]
    assert [(p.network, p.ip, p.mac) for p in ports] == [("lab", "10.9.0.1", macs[0])]
    shown = await api.ok("GET", "/v1/instances/vm-0", await api.token("reader"))
    assert shown["id"] == first["id"] and shown["ports"] == first["ports"]
    on_node_1 = await api.ok("GET", "/v1/instances", api.admin, params={"host": "node-1"})
    assert {i["host"] for i in on_node_1} == {"node-1"} and len(on_node_1) == 2


async def test_concurrent_creates_never_share_an_address(api: Api) -> None:
    await _catalog(api, ram_mb=GIB)
    await _host(api, "node-1")
    await _host(api, "node-2")
    made = await asyncio.gather(*(_create(api, f"vm-{n}") for n in range(8)))
    assert len({vm["ports"][0]["ip"] for vm in made}) == 8
    assert len({vm["ports"][0]["mac"] for vm in made}) == 8


async def test_weigher_uses_the_free_ram_fraction_and_pinning_works(api: Api) -> None:
    await _catalog(api)
    await _host(api, "big", ram_mb=128 * GIB)
    await _host(api, "small", ram_mb=32 * GIB)
    pinned = [await _create(api, f"vm-{n}", host="big") for n in range(3)]
    assert {vm["host"] for vm in pinned} == {"big"}
    # big: 80 of 128 GiB free (62%), small: 32 of 32 GiB (100%): small wins, less in absolute.
    assert (await _create(api, "vm-3"))["host"] == "small"
    assert "no host named 'ghost'" in await _refused(api, "vm-4", 404, host="ghost")


async def test_pinning_to_unschedulable_hosts_names_the_filter(api: Api) -> None:
    await _catalog(api)
    for name in ("node-1", "node-2", "node-3"):
        await _host(api, name)
    await api.act("node-1", "maintenance/enter", {"reason": "firmware"})
    await api.act("node-2", "disable", {"reason": "flaky NIC"})
    message = await _refused(api, "vm-1", host="node-1")
    assert "cannot place the instance on host node-1" in message
    assert "no valid host among 1 (host in maintenance: 1)" in message
    assert "(host disabled: 1)" in await _refused(api, "vm-1", host="node-2")
    placed = [(await _create(api, f"vm-{n}"))["host"] for n in range(4)]
    assert placed == ["node-3"] * 4  # the host in maintenance never receives one


async def test_no_capacity_and_missing_network_explain_themselves(api: Api) -> None:
    await _catalog(api, ram_mb=96 * GIB)
    await _host(api, "node-1")
    await _host(api, "node-2")
    await _host(api, "node-9", networks=("other",), ram_mb=1024 * GIB)
    assert (await _create(api, "vm-1"))["host"] in ("node-1", "node-2")
    assert (await _create(api, "vm-2"))["host"] in ("node-1", "node-2")  # node-9 lacks "lab"
    message = await _refused(api, "vm-3")
    assert message == (
        "cannot place the instance on any host: no valid host among 3 "
        "(network not on host: 1, not enough free RAM: 2)"
    )
    assert await _names(api) == ["vm-1", "vm-2"]


async def test_bad_requests_are_refused(api: Api) -> None:
    await _catalog(api)
    await _host(api, "node-1")
    await _create(api, "vm-1")
    assert "'vm-1' exists already" in await _refused(api, "vm-1")
    assert "no flavor named 'xl'" in await _refused(api, "vm-2", 404, flavor="xl")
    assert "no network named 'dmz'" in await _refused(api, "vm-2", 404, network="dmz")
    assert "invalid instance name" in await _refused(api, "VM_2", 422)
    reader = await _post(
        api, "/v1/instances", {"name": "r", "flavor": "m1", "network": "lab"}, "reader"
    )
    assert reader.status_code == 403
    assert await _names(api) == ["vm-1"]


async def test_delete_releases_claims_and_records_events(api: Api) -> None:
    await _catalog(api)
    await _host(api, "node-1")
    vm1, vm2 = await _create(api, "vm-1"), await _create(api, "vm-2")
    operator = await api.token("operator")
    deleting = await api.call("DELETE", "/v1/instances/vm-1", operator)
    assert deleting.status_code == 202
    assert (deleting.json()["state"], deleting.json()["host"]) == ("deleting", "node-1")
    await api.eventually(lambda: _gone(api, vm1["id"]))
    assert await _names(api) == ["vm-2"]
    assert await _claims(api, vm1["id"]) == ([], [])
    assert (await api.call("GET", "/v1/instances/vm-1", api.admin)).status_code == 404
    assert (await api.call("DELETE", "/v1/instances/vm-1", operator)).status_code == 404
    vm3 = await _create(api, "vm-3")
    assert vm3["ports"][0]["ip"] == vm1["ports"][0]["ip"] == "10.9.0.2"
    assert vm2["ports"][0]["ip"] == "10.9.0.3"
    events = [e for e in await api.events(kind="instance") if e["instance_id"] == vm1["id"]]
    assert [(e["kind"], e["actor"], e["host"]) for e in events] == [
        ("instance.created", "operator-bot", "node-1"),
        ("instance.deleting", "operator-bot", "node-1"),
        ("instance.deleted", "system", "node-1"),
    ]
    assert events[0]["data"] == {"flavor": "m1", "network": "lab", "ip": "10.9.0.2"}


async def test_name_of_a_deleted_instance_can_be_reused(api: Api) -> None:
    await _catalog(api)
    await _host(api, "node-1")
    first = await _create(api, "vm-1")
    await api.call("DELETE", "/v1/instances/vm-1", await api.token("operator"))
    await api.eventually(lambda: _gone(api, first["id"]))
    again = await _create(api, "vm-1")
    assert again["id"] != first["id"]


async def _report(api: Api, guests: list[dict[str, Any]] | None) -> None:
    agent = await api.token("agent")
    body = None if guests is None else {"guests": guests}
    response = await api.call("POST", "/v1/agent/hosts/node-1/heartbeat", agent, json=body)
    assert response.status_code == 200, response.text


async def _state(api: Api, name: str) -> tuple[str, str | None]:
    shown = await api.ok("GET", f"/v1/instances/{name}", api.admin)
    return shown["state"], shown["error"]


async def test_guest_reports_settle_building_and_notice_lost_instances(api: Api) -> None:
    await _catalog(api)
    await _host(api, "node-1")
    vm1, vm2 = await _create(api, "vm-1"), await _create(api, "vm-2")
    guest = {"id": vm1["id"], "name": "vm-1", "power": "running"}
    await _report(api, None)  # no report: nothing known, nothing changes
    await _report(api, [{**guest, "power": "paused"}])
    assert await _state(api, "vm-1") == ("building", None)
    await _report(api, [guest])
    assert await _state(api, "vm-1") == ("running", None)
    assert await _state(api, "vm-2") == ("building", None)  # unreported, still building
    await _report(api, [guest, {"id": vm2["id"], "name": "vm-2", "power": "running"}])
    await _report(api, [{**guest, "power": "crashed", "detail": "QEMU exited with 1"}])
    assert await _state(api, "vm-1") == ("error", "QEMU exited with 1")
    assert await _state(api, "vm-2") == ("running", None)  # one report may be stale
    await _report(api, [])
    assert await _state(api, "vm-2") == ("error", "the host does not run it")
    kinds = [
        (e["kind"], e["actor"])
        for e in await api.events(kind="instance")
        if e["instance_id"] == vm2["id"]
    ]
    assert kinds == [
        ("instance.created", "operator-bot"),
        ("instance.running", "system"),
        ("instance.error", "system"),
    ]


async def test_a_report_older_than_the_instance_start_does_not_fail_it(api: Api) -> None:
    """Regression: the agent listed its guests, the controller started an instance there and
    marked it running, then that older list arrived without it. At scale (many instances
    starting while heartbeats wait for the database) this failed healthy instances. Only the
    next report, listed after the controller answered, can tell that the instance is gone."""
    await _catalog(api)
    await _host(api, "node-1")
    vm1, vm2 = await _create(api, "vm-1"), await _create(api, "vm-2")
    one = {"id": vm1["id"], "name": "vm-1", "power": "running"}
    two = {"id": vm2["id"], "name": "vm-2", "power": "running"}
    await _report(api, [one, two])
    assert await _state(api, "vm-2") == ("running", None)
    await _report(api, [one])  # listed before vm-2 started: stale for vm-2
    assert await _state(api, "vm-2") == ("running", None)
    await _report(api, [one, two])  # the next list has it: nothing was lost
    await _report(api, [one])  # missing once more: still only one report
    assert await _state(api, "vm-2") == ("running", None)
    await _report(api, [one])
    assert await _state(api, "vm-2") == ("error", "the host does not run it")
    assert await _state(api, "vm-1") == ("running", None)
