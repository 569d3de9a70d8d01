"""Hosts: agent registration and heartbeats, listing and filters, enable/disable, liveness."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api.conftest import Api, registration

INVENTORY = registration()["inventory"]
CAPABILITIES = {**registration()["capabilities"], "accelerator": "tcg"}  # tcg unless reported


async def _names(api: Api, **params: Any) -> list[str]:
    hosts = await api.ok("GET", "/v1/hosts", api.admin, params=params)
    return [host["name"] for host in hosts]


async def _in_maintenance(api: Api, name: str) -> dict[str, Any]:
    await api.act(name, "maintenance/enter", {"reason": "firmware"})

    async def reached() -> dict[str, Any] | None:
        host = await api.host(name)
        return host if host["maintenance"]["state"] == "in_maintenance" else None

    return await api.eventually(reached)


async def test_register_creates_host(api: Api) -> None:
    response = await api.register("node-1")
    assert response.status_code == 200
    assert response.json() == {"host": "node-1", "heartbeat_interval": 5.0, "created": True}
    host = await api.host("node-1")
    assert host["management_address"] == "10.0.0.11"
    assert host["migration_address"] == "192.168.10.11"
    assert host["inventory"] == {
        **INVENTORY,
        "cpu_allocation_ratio": 4.0,
        "ram_allocation_ratio": 1.0,
        "disk_allocation_ratio": 1.0,
        "reserved_ram_mb": 0,
        "reserved_disk_gb": 0,
    }
    assert host["capabilities"] == CAPABILITIES
    assert (host["liveness"], host["admin"]["state"], host["instances"]) == ("up", "enabled", 0)
    assert host["maintenance"]["state"] == "in_service"
    assert host["maintenance"]["schedulable"] is True
    assert host["last_heartbeat_at"] is not None
    [event] = await api.events(host="node-1")
    assert (event["kind"], event["actor"]) == ("host.registered", "agent-bot")
    assert event["data"]["inventory"]["vcpus"] == 32


async def test_reregister_updates_inventory_but_keeps_operator_state(api: Api) -> None:
    """A host rebooting while disabled and in maintenance comes back disabled and in maintenance."""
    await api.register("node-1")
    await api.act("node-1", "disable", {"reason": "bad DIMM"})
    before = await _in_maintenance(api, "node-1")

    response = await api.register(
        "node-1",
        inventory={**INVENTORY, "vcpus": 64},
        management_address="10.0.0.99",
    )

    assert response.status_code == 200
    assert response.json()["created"] is False
    host = await api.host("node-1")
    assert host["inventory"]["vcpus"] == 64
    assert host["management_address"] == "10.0.0.99"
    assert host["admin"] == before["admin"]
    assert host["admin"]["state"] == "disabled"
    assert host["admin"]["reason"] == "bad DIMM"
    assert host["maintenance"] == before["maintenance"]
    assert host["maintenance"]["reason"] == "firmware"
    status = await api.ok("GET", "/v1/hosts/node-1/maintenance", api.admin)
    assert status["drain"]["state"] == "completed"
    await asyncio.sleep(0.2)  # reconcile passes run; nothing may move the host
    assert (await api.host("node-1"))["maintenance"]["state"] == "in_maintenance"
    [updated] = await api.events(kind="host.updated")
    assert set(updated["data"]["changed"]) == {"vcpus", "management_address"}
    assert await api.kinds(kind="host.registered") == ["host.registered"]


async def test_reregister_unchanged_records_no_update(api: Api) -> None:
    await api.register("node-1")
    response = await api.register("node-1")
    assert response.json()["created"] is False
    assert await api.kinds(host="node-1") == ["host.registered"]


INVALID_REGISTRATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "reserved > capacity": (
        {"inventory": {**INVENTORY, "reserved_vcpus": 33}},
        "reserved vcpus (33) exceeds the host's 32",
    ),
    "reserved ram > ram": ({"inventory": {**INVENTORY, "reserved_ram_mb": 10**6}}, "ram_mb"),
    "duplicate networks": (
        {"capabilities": {**CAPABILITIES, "networks": ["a", "a"]}},
        "networks must not repeat",
    ),
    "bad host name": ({"name": "Node_1"}, "invalid host name 'Node_1'"),
    "host name with newline": ({"name": "node-1\n"}, "invalid host name"),
    "host name too long": ({"name": "n" * 64}, "invalid host name"),
    "missing inventory": ({"inventory": None}, "inventory: Field required"),
    "incomplete inventory": ({"inventory": {"vcpus": 4}}, "inventory.ram_mb: Field required"),
    "extra field": ({"color": "red"}, "color: Extra inputs are not permitted"),
    "extra inventory field": ({"inventory": {**INVENTORY, "gpus": 1}}, "inventory.gpus: Extra"),
    "no vcpus": ({"inventory": {**INVENTORY, "vcpus": 0}}, "inventory.vcpus"),
    "bad address": ({"management_address": "10.0.0.1; reboot"}, "management_address"),
    "bad network name": ({"capabilities": {**CAPABILITIES, "networks": ["net\n"]}}, "networks"),
    "unknown accelerator": (
        {"capabilities": {**CAPABILITIES, "accelerator": "hvf"}},
        "capabilities.accelerator: Input should be 'kvm' or 'tcg'",
    ),
}


async def test_the_accelerator_follows_each_registration(api: Api) -> None:
    """A host that probed KVM says so; after a reboot into TCG (KVM gone) it says that."""
    for accel in ("kvm", "tcg"):
        caps = {**CAPABILITIES, "accelerator": accel}
        assert (await api.register("node-1", capabilities=caps)).status_code == 200
        assert (await api.host("node-1"))["capabilities"]["accelerator"] == accel


async def test_invalid_registration(api: Api, subtests: pytest.Subtests) -> None:
    agent = await api.token("agent")
    for case, (changes, message) in INVALID_REGISTRATIONS.items():
        with subtests.test(case):
            body = {k: v for k, v in {**registration(), **changes}.items() if v is not None}
            response = await api.call("POST", "/v1/agent/register", agent, json=body)
            assert response.status_code == 422, response.text
            assert response.json()["error"] == "invalid_input"
            assert message in response.json()["message"]
    assert await _names(api) == []
    assert await api.kinds(kind="host") == []


async def test_registration_missing_every_field(api: Api) -> None:
    response = await api.call("POST", "/v1/agent/register", await api.token("agent"), json={})
    assert response.status_code == 422
    for field in ("name", "management_address", "inventory", "capabilities"):
        assert f"{field}: Field required" in response.json()["message"]


async def test_heartbeat(api: Api) -> None:
    await api.register("node-1")
    first = (await api.host("node-1"))["last_heartbeat_at"]
    response = await api.heartbeat("node-1")
    assert response.json() == {"host": "node-1", "heartbeat_interval": 5.0}
    assert (await api.host("node-1"))["last_heartbeat_at"] > first
    assert await api.kinds(host="node-1") == ["host.registered"]


async def test_heartbeat_of_unknown_host(api: Api) -> None:
    response = await api.heartbeat("ghost")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "message": "no host named 'ghost'"}


async def test_show_unknown_host(api: Api) -> None:
    response = await api.call("GET", "/v1/hosts/ghost", api.admin)
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "message": "no host named 'ghost'"}


async def test_list_filters(api: Api) -> None:
    for name in ("node-4", "node-2", "node-1", "node-3"):
        await api.register(name)
    await api.act("node-2", "disable", {"reason": "flaky NIC"})
    await _in_maintenance(api, "node-3")
    await api.add_instance("node-4")
    await api.act("node-4", "maintenance/enter", {"reason": "kernel"})

    assert await _names(api) == ["node-1", "node-2", "node-3", "node-4"]
    assert await _names(api, admin_state="disabled") == ["node-2"]
    assert await _names(api, admin_state="enabled") == ["node-1", "node-3", "node-4"]
    assert await _names(api, maintenance="in_service") == ["node-1", "node-2"]
    assert await _names(api, maintenance=["draining", "in_maintenance"]) == ["node-3", "node-4"]
    assert await _names(api, maintenance="drain_failed") == []
    assert await _names(api, admin_state="disabled", maintenance="in_maintenance") == []
    assert await _names(api, liveness="up") == ["node-1", "node-2", "node-3", "node-4"]
    assert await _names(api, liveness="down") == []
    assert (await api.host("node-4"))["instances"] == 1


async def test_list_rejects_unknown_filter_values(api: Api) -> None:
    for field, value in [("admin_state", "off"), ("maintenance", "resting"), ("liveness", "x")]:
        response = await api.call("GET", "/v1/hosts", api.admin, params={field: value})
        assert response.status_code == 422
        assert response.json()["message"].startswith(field)


@pytest.mark.parametrize("heartbeat_interval", [0.2])
async def test_liveness_down_and_up_again(api: Api) -> None:
    await api.register("node-1")
    await api.register("node-2")

    async def node_1_down() -> list[dict[str, Any]]:
        assert (await api.heartbeat("node-2")).status_code == 200  # node-2 stays up
        return await api.events(kind="host.down", host="node-1")

    [down] = await api.eventually(node_1_down)
    assert (down["host"], down["actor"]) == ("node-1", "system")
    assert await _names(api, liveness="down") == ["node-1"]
    assert await _names(api, liveness="up") == ["node-2"]
    assert (await api.host("node-1"))["liveness"] == "down"
    for _ in range(4):  # several liveness passes: the host is announced down once
        await api.heartbeat("node-2")
        await asyncio.sleep(0.1)
    assert await api.kinds(kind="host.down", host="node-1") == ["host.down"]

    await api.heartbeat("node-1")
    await api.heartbeat("node-2")
    assert await _names(api, liveness="up") == ["node-1", "node-2"]
    assert (await api.host("node-1"))["liveness"] == "up"
    [up] = await api.events(kind="host.up", host="node-1")
    assert (up["host"], up["actor"]) == ("node-1", "agent-bot")
    assert up["id"] > down["id"]
    await api.heartbeat("node-1")
    assert await api.kinds(host="node-1", kind=["host.up", "host.down"]) == [
        "host.down",
        "host.up",
    ]


BAD_DISABLE_BODIES: dict[str, tuple[dict[str, Any] | None, str]] = {
    "empty reason": ({"reason": ""}, "reason must not be empty"),
    "blank reason": ({"reason": "   \t"}, "reason must not be empty"),
    "reason of 256": ({"reason": "x" * 256}, "256 characters"),
    "reason of 5000": ({"reason": "x" * 5000}, "reason"),
    "control character": ({"reason": "a\x1bb"}, "control characters"),
    "no body": (None, "Field required"),
    "no reason": ({}, "reason: Field required"),
    "extra field": ({"reason": "x", "force": True}, "force: Extra inputs"),
    "reason not text": ({"reason": 5}, "reason: Input should be a valid string"),
}


async def test_disable_rejects_bad_input(api: Api, subtests: pytest.Subtests) -> None:
    await api.register("node-1")
    operator = await api.token("operator")
    for case, (body, message) in BAD_DISABLE_BODIES.items():
        with subtests.test(case):
            response = await api.call("POST", "/v1/hosts/node-1/disable", operator, json=body)
            assert response.status_code == 422
            assert response.json()["error"] == "invalid_input"
            assert message in response.json()["message"]
    assert (await api.host("node-1"))["admin"]["state"] == "enabled"
    assert await api.events(kind="host.disabled") == []


async def test_disable_with_longest_reason(api: Api) -> None:
    await api.register("node-1")
    host = await api.act("node-1", "disable", {"reason": "  " + "r" * 255 + "  "})
    assert host["admin"]["state"] == "disabled"
    assert host["admin"]["reason"] == "r" * 255
    assert host["admin"]["actor"] == "operator-bot"
    assert host["admin"]["changed_at"] is not None
    [event] = await api.events(kind="host.disabled")
    assert event["data"] == {"reason": "r" * 255}


async def test_disable_twice_is_illegal(api: Api) -> None:
    await api.register("node-1")
    await api.act("node-1", "disable", {"reason": "first"})
    operator = await api.token("operator")
    body = {"reason": "second"}
    response = await api.call("POST", "/v1/hosts/node-1/disable", operator, json=body)
    assert response.status_code == 409
    error = response.json()
    assert error["error"] == "illegal_transition"
    for part in ("node-1", "disable", "'disabled'", "enable"):
        assert part in error["message"]
    assert (await api.host("node-1"))["admin"]["reason"] == "first"
    assert await api.kinds(kind="host.disabled") == ["host.disabled"]


async def test_enable_when_enabled_is_illegal(api: Api) -> None:
    await api.register("node-1")
    operator = await api.token("operator")
    response = await api.call("POST", "/v1/hosts/node-1/enable", operator)
    assert response.status_code == 409
    assert response.json()["error"] == "illegal_transition"
    assert "'enabled'" in response.json()["message"]
    assert await api.events(kind="host.enabled") == []


@pytest.mark.parametrize("reason", [None, "DIMM replaced"])
async def test_enable_with_optional_reason(api: Api, reason: str | None) -> None:
    await api.register("node-1")
    await api.act("node-1", "disable", {"reason": "bad DIMM"})
    host = await api.act("node-1", "enable", None if reason is None else {"reason": reason})
    assert host["admin"]["state"] == "enabled"
    assert host["admin"]["reason"] == reason
    assert host["admin"]["actor"] == "operator-bot"
    [event] = await api.events(kind="host.enabled")
    assert event["data"] == {"reason": reason}


async def test_enable_rejects_blank_reason(api: Api) -> None:
    await api.register("node-1")
    await api.act("node-1", "disable", {"reason": "bad DIMM"})
    operator = await api.token("operator")
    body = {"reason": " "}
    response = await api.call("POST", "/v1/hosts/node-1/enable", operator, json=body)
    assert response.status_code == 422
    assert (await api.host("node-1"))["admin"]["state"] == "disabled"


async def test_admin_actions_on_unknown_host(api: Api) -> None:
    operator = await api.token("operator")
    for action in ("disable", "enable"):
        response = await api.call(
            "POST", f"/v1/hosts/ghost/{action}", operator, json={"reason": "x"}
        )
        assert response.status_code == 404
        assert response.json() == {"error": "not_found", "message": "no host named 'ghost'"}
