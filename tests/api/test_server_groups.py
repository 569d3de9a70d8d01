"""Server groups through the API: create, list, show, delete, validation, roles, events, and how
their policies steer the placement of new instances."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ferry.db.models import Allocation, Instance
from tests.api.conftest import Api

CAPS = {"cpu_model": "EPYC-Rome", "qemu_version": "8.2.2", "machine_type": "pc-q35-8.2"}
GIB = 1024
HOSTS = ("node-1", "node-2", "node-3")
POLICIES = "affinity, anti-affinity, soft-affinity, soft-anti-affinity"


async def _hosts(api: Api, *names: str) -> None:
    """Hosts of 32 GiB on the 'lab' network: four 8 GiB instances fill one."""
    for name in names or HOSTS:
        response = await api.register(
            name,
            capabilities={**CAPS, "networks": ["lab"]},
            inventory={"vcpus": 32, "ram_mb": 32 * GIB, "disk_gb": 1000},
        )
        assert response.status_code == 200, response.text


async def _post(
    api: Api, path: str, body: dict[str, Any], role: str = "operator"
) -> httpx.Response:
    return await api.call("POST", path, await api.token(role), json=body)


async def _catalog(api: Api) -> None:
    flavor = {"name": "m1", "vcpus": 2, "ram_mb": 8 * GIB, "disk_gb": 10}
    assert (await _post(api, "/v1/flavors", flavor)).status_code == 201
    network = {"name": "lab", "cidr": "10.9.0.0/24", "gateway": "10.9.0.1"}
    assert (await _post(api, "/v1/networks", network)).status_code == 201


async def _group(api: Api, name: str, policy: str) -> dict[str, Any]:
    response = await _post(api, "/v1/server-groups", {"name": name, "policy": policy})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


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


async def _placed(api: Api, group: str, *names: str) -> list[str]:
    """Create each instance in `group`; the hosts they land on, in order."""
    return [(await _create(api, name, group=group))["host"] for name in names]


async def _members(api: Api, group: str) -> list[tuple[str, str | None]]:
    shown = await api.ok("GET", f"/v1/server-groups/{group}", api.admin)
    return [(m["name"], m["host"]) for m in shown["members"]]


async def _gone(api: Api, instance_id: str) -> bool:
    return instance_id not in [i["id"] for i in await api.ok("GET", "/v1/instances", api.admin)]


async def _delete_instance(api: Api, instance: dict[str, Any]) -> None:
    operator = await api.token("operator")
    name = instance["name"]
    assert (await api.call("DELETE", f"/v1/instances/{name}", operator)).status_code == 202
    await api.eventually(lambda: _gone(api, instance["id"]))


async def test_create_list_show_delete(api: Api) -> None:
    await _catalog(api)
    await _hosts(api)
    web = await _group(api, "web", "anti-affinity")
    assert {k: web[k] for k in ("name", "policy", "members", "created_by")} == {
        "name": "web",
        "policy": "anti-affinity",
        "members": [],
        "created_by": "operator-bot",
    }
    assert web["created_at"]
    await _group(api, "db", "soft-affinity")
    reader = await api.token("reader")
    listed = await api.ok("GET", "/v1/server-groups", reader)
    assert [(g["name"], g["policy"], g["members"]) for g in listed] == [
        ("db", "soft-affinity", []),
        ("web", "anti-affinity", []),
    ]

    web_2 = await _create(api, "web-2", group="web")
    web_1 = await _create(api, "web-1", group="web")
    plain = await _create(api, "plain")
    assert (web_1["server_group"], web_2["server_group"], plain["server_group"]) == (
        "web",
        "web",
        None,
    )
    shown = await api.ok("GET", "/v1/instances/web-1", reader)
    assert shown["server_group"] == "web"
    members = (await api.ok("GET", "/v1/server-groups/web", reader))["members"]
    assert members == [
        {"name": "web-1", "host": web_1["host"], "state": "building"},
        {"name": "web-2", "host": web_2["host"], "state": "building"},
    ]
    listed = await api.ok("GET", "/v1/server-groups", reader)
    assert [[m["name"] for m in g["members"]] for g in listed] == [[], ["web-1", "web-2"]]

    missing = await api.call("GET", "/v1/server-groups/ghost", reader)
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "message": "no server group named 'ghost'"}
    operator = await api.token("operator")
    assert (await api.call("DELETE", "/v1/server-groups/db", operator)).status_code == 204
    assert (await api.call("GET", "/v1/server-groups/db", reader)).status_code == 404
    assert (await api.call("DELETE", "/v1/server-groups/db", operator)).status_code == 404
    assert [g["name"] for g in await api.ok("GET", "/v1/server-groups", reader)] == ["web"]


@pytest.mark.parametrize("policy", ["strict", "Affinity", "anti_affinity", ""])
async def test_an_unknown_policy_is_refused_with_the_allowed_ones(api: Api, policy: str) -> None:
    response = await _post(api, "/v1/server-groups", {"name": "web", "policy": policy})
    assert response.status_code == 422
    assert response.json() == {
        "error": "invalid_input",
        "message": f"invalid server group policy {policy!r}: use one of {POLICIES}",
    }
    assert await api.ok("GET", "/v1/server-groups", api.admin) == []
    assert await api.kinds(kind="server_group") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "Web_1", "policy": "affinity"}, "invalid server group name 'Web_1'"),
        ({"name": "-web", "policy": "affinity"}, "invalid server group name '-web'"),
        ({"name": "web"}, "policy"),
        ({"name": "web", "policy": "affinity", "extra": 1}, "extra"),
        ({"name": "w" * 64, "policy": "affinity"}, "name"),
    ],
)
async def test_malformed_bodies_are_refused(api: Api, body: dict[str, Any], message: str) -> None:
    response = await _post(api, "/v1/server-groups", body)
    assert response.status_code == 422, response.text
    assert message in response.json()["message"]
    assert await api.ok("GET", "/v1/server-groups", api.admin) == []


async def test_a_duplicate_name_conflicts(api: Api) -> None:
    await _group(api, "web", "anti-affinity")
    again = await _post(api, "/v1/server-groups", {"name": "web", "policy": "affinity"})
    assert again.status_code == 409
    assert again.json()["message"] == "a server group named 'web' exists already"
    shown = await api.ok("GET", "/v1/server-groups/web", api.admin)
    assert shown["policy"] == "anti-affinity"  # the first one stands
    assert await api.kinds(kind="server_group") == ["server_group.created"]


async def test_delete_is_refused_while_live_members_remain(api: Api) -> None:
    await _catalog(api)
    await _hosts(api)
    await _group(api, "web", "anti-affinity")
    web_1 = await _create(api, "web-1", group="web")
    web_2 = await _create(api, "web-2", group="web")
    operator = await api.token("operator")
    refused = await api.call("DELETE", "/v1/server-groups/web", operator)
    assert refused.status_code == 409
    assert refused.json() == {
        "error": "conflict",
        "message": "server group 'web' still has 2 instance(s): web-1, web-2",
    }
    await _delete_instance(api, web_1)
    refused = await api.call("DELETE", "/v1/server-groups/web", operator)
    assert refused.status_code == 409
    assert refused.json()["message"] == "server group 'web' still has 1 instance(s): web-2"
    await _delete_instance(api, web_2)
    assert (await api.call("DELETE", "/v1/server-groups/web", operator)).status_code == 204
    # The deleted members keep the name for the audit trail, but a new group of that name
    # starts empty and with its own policy.
    again = await _group(api, "web", "affinity")
    assert (again["policy"], again["members"]) == ("affinity", [])


async def test_an_unknown_group_refuses_the_instance(api: Api) -> None:
    await _catalog(api)
    await _hosts(api)
    assert await _refused(api, "vm-1", 404, group="ghost") == "no server group named 'ghost'"
    assert await api.ok("GET", "/v1/instances", api.admin) == []
    async with api.controller.db.reading() as session:
        assert (await session.scalars(select(Instance))).all() == []
        assert (await session.scalars(select(Allocation))).all() == []
    assert await api.kinds(kind="instance") == []
    too_long = await _refused(api, "vm-1", 422, group="g" * 64)
    assert "group" in too_long


async def test_roles(api: Api) -> None:
    reader = await api.token("reader")
    refused = await _post(api, "/v1/server-groups", {"name": "web", "policy": "affinity"}, "reader")
    assert refused.status_code == 403
    assert "role 'reader', which may not operate" in refused.json()["message"]
    await _group(api, "web", "affinity")
    assert (await api.call("DELETE", "/v1/server-groups/web", reader)).status_code == 403
    agent = await api.token("agent")
    assert (await api.call("GET", "/v1/server-groups", agent)).status_code == 403
    assert (await api.call("GET", "/v1/server-groups", None)).status_code == 401
    assert [g["name"] for g in await api.ok("GET", "/v1/server-groups", reader)] == ["web"]
    assert (await api.ok("GET", "/v1/server-groups/web", reader))["name"] == "web"
    admin = await _post(api, "/v1/server-groups", {"name": "db", "policy": "affinity"}, "admin")
    assert admin.status_code == 201 and admin.json()["created_by"] == "admin"


async def test_events_record_the_actor(api: Api) -> None:
    await _catalog(api)
    await _hosts(api)
    await _group(api, "web", "soft-anti-affinity")
    vm = await _create(api, "vm-1", group="web")
    assert (await api.call("DELETE", "/v1/server-groups/web", api.admin)).status_code == 409
    await _delete_instance(api, vm)
    assert (await api.call("DELETE", "/v1/server-groups/web", api.admin)).status_code == 204
    events = await api.events(kind="server_group")
    assert [(e["kind"], e["actor"], e["data"]) for e in events] == [
        ("server_group.created", "operator-bot", {"group": "web", "policy": "soft-anti-affinity"}),
        ("server_group.deleted", "admin", {"group": "web", "policy": "soft-anti-affinity"}),
    ]
    assert [e["message"] for e in events] == [
        "server group web created (soft-anti-affinity)",
        "server group web deleted",
    ]
    created = await api.events(kind="instance.created")
    assert created[0]["data"]["group"] == "web"


async def _others_on_node_2_and_3(api: Api) -> None:
    """Load node-2 and node-3 with an instance outside any group, so that free RAM alone would
    put the next instances on node-1, one after the other."""
    assert (await _create(api, "other-2", host="node-2"))["host"] == "node-2"
    assert (await _create(api, "other-3", host="node-3"))["host"] == "node-3"


async def test_anti_affinity_puts_members_on_different_hosts(api: Api) -> None:
    await _catalog(api)
    await _hosts(api)
    await _others_on_node_2_and_3(api)
    await _group(api, "web", "anti-affinity")
    placed = await _placed(api, "web", "web-0", "web-1", "web-2")
    assert sorted(placed) == list(HOSTS)
    message = await _refused(api, "web-3", group="web")
    assert "server-group anti-affinity: 3" in message
    assert message == (
        "cannot place the instance on any host: no valid host among 3 "
        "(server-group anti-affinity: 3)"
    )
    pinned = await _refused(api, "web-3", group="web", host="node-2")
    assert "no valid host among 1 (server-group anti-affinity: 1)" in pinned
    assert (await _create(api, "plain"))["host"] in HOSTS  # room enough outside the group
    assert [name for name, _ in await _members(api, "web")] == ["web-0", "web-1", "web-2"]
    # A member that goes frees its host for the next one.
    web_1 = await api.ok("GET", "/v1/instances/web-1", api.admin)
    await _delete_instance(api, web_1)
    assert (await _create(api, "web-3", group="web"))["host"] == web_1["host"]


async def test_affinity_puts_members_on_the_host_of_the_first(api: Api) -> None:
    await _catalog(api)
    await _hosts(api)
    await _group(api, "db", "affinity")
    first = (await _create(api, "db-0", group="db"))["host"]
    # Free RAM alone would spread these over the two empty hosts.
    assert await _placed(api, "db", "db-1", "db-2", "db-3") == [first] * 3
    other = next(h for h in HOSTS if h != first)
    pinned = await _refused(api, "db-4", group="db", host=other)
    assert "no valid host among 1 (server-group affinity: 1)" in pinned
    # The first host is full now (4 x 8 GiB): the group cannot grow, other instances can.
    full = await _refused(api, "db-4", group="db")
    assert full == (
        "cannot place the instance on any host: no valid host among 3 "
        "(not enough free RAM: 1, server-group affinity: 2)"
    )
    assert (await _create(api, "plain"))["host"] != first
    assert {host for _, host in await _members(api, "db")} == {first}


async def test_soft_anti_affinity_spreads_while_hosts_allow(api: Api) -> None:
    await _catalog(api)
    await _hosts(api)
    await _others_on_node_2_and_3(api)
    await _group(api, "web", "soft-anti-affinity")
    spread = await _placed(api, "web", "web-0", "web-1", "web-2")
    assert sorted(spread) == list(HOSTS)  # free RAM alone would have put two on node-1
    # Every host holds a member: a soft policy places the fourth anyway, on the emptiest host,
    # and the fifth again on a host holding fewer members than that one.
    fourth = (await _create(api, "web-3", group="web"))["host"]
    assert fourth == "node-1"
    fifth = (await _create(api, "web-4", group="web"))["host"]
    assert fifth != fourth
    counts = Counter(host for _, host in await _members(api, "web"))
    assert sorted(counts.values()) == [1, 2, 2]


async def test_soft_affinity_stacks_until_the_host_is_full(api: Api) -> None:
    await _catalog(api)
    await _hosts(api)
    await _group(api, "db", "soft-affinity")
    placed = await _placed(api, "db", "db-0", "db-1", "db-2", "db-3")
    assert len(set(placed)) == 1  # free RAM alone would have spread them
    spilled = (await _create(api, "db-4", group="db"))["host"]  # not refused: soft
    assert spilled != placed[0]
