"""Networks' allocation ranges and their DHCP leases as agents read them: every port of a live
instance, its name as hostname, with an ETag that turns an unchanged list into a 304."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import Api, registration

CAPS = {**registration()["capabilities"], "networks": ["lab"]}


async def _setup(api: Api, **network: Any) -> None:
    operator = await api.token("operator")
    flavor = {"name": "m1", "vcpus": 1, "ram_mb": 128, "disk_gb": 1}
    assert (await api.call("POST", "/v1/flavors", operator, json=flavor)).status_code == 201
    body = {"name": "lab", "cidr": "10.9.0.0/16", "gateway": "10.9.0.1", **network}
    response = await api.call("POST", "/v1/networks", operator, json=body)
    assert response.status_code == 201, response.text
    assert (await api.register("node-1", capabilities=CAPS)).status_code == 200


async def _instance(api: Api, name: str) -> dict[str, Any]:
    operator = await api.token("operator")
    body = {"name": name, "flavor": "m1", "network": "lab"}
    response = await api.call("POST", "/v1/instances", operator, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _leases(api: Api, etag: str | None = None) -> httpx.Response:
    headers = {"If-None-Match": etag} if etag else {}
    agent = await api.token("agent")
    return await api.client.get(
        "/v1/agent/networks/lab/leases", headers={**agent.headers, **headers}
    )


async def test_instances_get_addresses_inside_the_allocation_range(api: Api) -> None:
    await _setup(api, allocation_start="10.9.1.1", allocation_end="10.9.1.2")
    ips = [(await _instance(api, f"vm{i}"))["ports"][0]["ip"] for i in (1, 2)]
    assert ips == ["10.9.1.1", "10.9.1.2"]
    operator = await api.token("operator")
    full = await api.call(
        "POST", "/v1/instances", operator, json={"name": "vm3", "flavor": "m1", "network": "lab"}
    )
    assert full.status_code == 409 and "has no free address" in full.json()["message"]


async def test_allocation_ranges_are_checked(api: Api) -> None:
    operator = await api.token("operator")
    for bad, message in (
        ({"allocation_start": "10.10.0.1"}, "allocation_start 10.10.0.1 is not a host address"),
        ({"allocation_end": "nonsense"}, "invalid allocation_end 'nonsense'"),
        (
            {"allocation_start": "10.9.2.1", "allocation_end": "10.9.1.1"},
            "allocation_start 10.9.2.1 is after allocation_end 10.9.1.1",
        ),
    ):
        body = {"name": "lab", "cidr": "10.9.0.0/16", **bad}
        response = await api.call("POST", "/v1/networks", operator, json=body)
        assert response.status_code == 422 and message in response.json()["message"], response.text
    assert await api.ok("GET", "/v1/networks", api.admin) == []


async def test_agents_read_the_leases_with_an_etag(api: Api) -> None:
    await _setup(api)
    vm1 = await _instance(api, "vm1")
    first = await _leases(api)
    assert first.status_code == 200
    port = vm1["ports"][0]
    assert first.json() == {
        "network": "lab",
        "cidr": "10.9.0.0/16",
        "gateway": "10.9.0.1",
        "leases": [{"mac": port["mac"], "ip": port["ip"], "hostname": "vm1"}],
    }
    etag = first.headers["ETag"]
    unchanged = await _leases(api, etag)
    assert unchanged.status_code == 304 and unchanged.content == b""
    await _instance(api, "vm2")
    changed = await _leases(api, etag)
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert [lease["hostname"] for lease in changed.json()["leases"]] == ["vm1", "vm2"]


async def test_only_agents_read_leases_and_of_known_networks(api: Api) -> None:
    await _setup(api)
    reader = await api.token("reader")
    refused = await api.client.get("/v1/agent/networks/lab/leases", headers=reader.headers)
    assert refused.status_code == 403
    agent = await api.token("agent")
    missing = await api.client.get("/v1/agent/networks/ghost/leases", headers=agent.headers)
    assert missing.status_code == 404 and "no network named 'ghost'" in missing.json()["message"]
