"""Maintenance: dry run, enter, drain completion, exit (also mid-drain), persistence, actors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api.conftest import Api, Launch

STATUS = "/v1/hosts/{}/maintenance"


async def _enter(api: Api, name: str = "node-1", **body: Any) -> Any:
    return await api.act(name, "maintenance/enter", {"reason": "firmware", **body})


async def _status(api: Api, name: str = "node-1") -> dict[str, Any]:
    status: dict[str, Any] = await api.ok("GET", STATUS.format(name), api.admin)
    return status


async def _until_state(api: Api, state: str, name: str = "node-1") -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        status = await _status(api, name)
        return status if status["maintenance"]["state"] == state else None

    return await api.eventually(reached)


async def _registered(api: Api) -> None:
    """node-1 registered and the operator token made, before a test snapshots the events."""
    await api.register("node-1")
    await api.token("operator")


async def _post(api: Api, path: str, body: dict[str, Any] | None = None) -> Any:
    operator = await api.token("operator")
    return await api.call("POST", f"/v1/hosts/node-1/{path}", operator, json=body)


@pytest.mark.parametrize("instances", [0, 2])
async def test_dry_run_changes_nothing(api: Api, instances: int) -> None:
    await _registered(api)
    for number in range(instances):
        await api.add_instance("node-1", f"vm-{number}")
    before = await api.events()

    preview = await _enter(api, dry_run=True)

    assert preview["dry_run"] is True
    assert (preview["host"], preview["from_state"], preview["to_state"]) == (
        "node-1",
        "in_service",
        "draining",
    )
    assert [i["name"] for i in preview["instances"]] == [f"vm-{n}" for n in range(instances)]
    expected_note = f"{instances} instance(s)" if instances else "holds no instance"
    assert [note for note in preview["notes"] if expected_note in note]
    await asyncio.sleep(0.15)  # reconcile passes would act on anything the dry run started
    status = await _status(api)
    assert status["maintenance"]["state"] == "in_service"
    assert status["maintenance"]["schedulable"] is True
    assert status["drain"] is None
    assert await api.events() == before


async def test_dry_run_on_host_in_maintenance_conflicts(api: Api) -> None:
    await api.register("node-1")
    await _enter(api)
    await _until_state(api, "in_maintenance")
    response = await _post(api, "maintenance/enter", {"reason": "again", "dry_run": True})
    assert response.status_code == 409
    assert response.json()["error"] == "illegal_transition"
    assert "'in_maintenance'" in response.json()["message"]


async def test_enter_empty_host_reaches_maintenance(api: Api) -> None:
    await api.register("node-1")
    entered = await _enter(api)
    assert entered["host"] == "node-1"
    assert entered["maintenance"]["state"] in ("draining", "in_maintenance")
    assert entered["maintenance"]["schedulable"] is False
    assert entered["maintenance"]["reason"] == "firmware"
    assert entered["maintenance"]["actor"] == "operator-bot"
    assert entered["maintenance"]["since"] is not None
    assert entered["drain"]["instances_total"] == 0

    status = await _until_state(api, "in_maintenance")

    drain = status["drain"]
    assert (drain["id"], drain["state"]) == (entered["drain"]["id"], "completed")
    assert drain["finished_at"] is not None
    assert (drain["reason"], drain["actor"]) == ("firmware", "operator-bot")
    assert status["instances_remaining"] == 0
    assert status["maintenance"]["schedulable"] is False
    assert status["maintenance"]["since"] == entered["maintenance"]["since"]
    events = await api.events(host="node-1", kind=["host.maintenance", "drain"])
    assert [(e["kind"], e["actor"]) for e in events] == [
        ("host.maintenance.entered", "operator-bot"),
        ("drain.started", "operator-bot"),
        ("drain.completed", "system"),
        ("host.maintenance.completed", "system"),
    ]
    assert {e["drain_id"] for e in events} == {drain["id"]}


@pytest.mark.parametrize("instances", [0, 1])
async def test_enter_twice_conflicts(api: Api, instances: int) -> None:
    await api.register("node-1")
    if instances:
        await api.add_instance("node-1")
    await _enter(api, force=True)
    state = "draining" if instances else "in_maintenance"
    await _until_state(api, state)
    response = await _post(api, "maintenance/enter", {"reason": "again"})
    assert response.status_code == 409
    assert response.json()["error"] == "illegal_transition"
    assert f"'{state}'" in response.json()["message"]
    assert await api.kinds(kind="drain.started") == ["drain.started"]


async def test_exit_from_in_service_conflicts(api: Api) -> None:
    await _registered(api)
    before = await api.events()
    response = await _post(api, "maintenance/exit")
    assert response.status_code == 409
    assert response.json()["error"] == "illegal_transition"
    assert "'in_service'" in response.json()["message"]
    assert await api.events() == before


async def test_exit_from_maintenance(api: Api) -> None:
    await api.register("node-1")
    await _enter(api)
    drain = (await _until_state(api, "in_maintenance"))["drain"]

    exited = await api.act("node-1", "maintenance/exit", {"reason": "firmware done"})

    assert exited["maintenance"]["state"] == "in_service"
    assert exited["maintenance"]["schedulable"] is True
    assert (exited["maintenance"]["reason"], exited["maintenance"]["since"]) == (None, None)
    assert exited["maintenance"]["actor"] == "operator-bot"
    assert exited["drain"] == drain  # completed, and left so
    [event] = await api.events(kind="host.maintenance.exited")
    assert event["data"] == {"reason": "firmware done", "previous_state": "in_maintenance"}
    assert event["drain_id"] == drain["id"]
    await asyncio.sleep(0.15)
    assert (await _status(api))["maintenance"]["state"] == "in_service"


async def test_exit_while_draining_cancels_the_drain(api: Api) -> None:
    await api.register("node-1")
    await api.add_instance("node-1")
    entered = await _enter(api, force=True)
    assert entered["maintenance"]["state"] == "draining"
    assert entered["drain"]["instances_total"] == 1
    await asyncio.sleep(0.3)  # several reconcile passes: the drain cannot complete
    status = await _status(api)
    assert (status["maintenance"]["state"], status["drain"]["state"]) == ("draining", "running")
    assert status["instances_remaining"] == 1
    mark = (await api.events())[-1]["id"]

    exited = await api.act("node-1", "maintenance/exit")

    assert exited["maintenance"]["state"] == "in_service"
    assert exited["maintenance"]["schedulable"] is True
    assert exited["drain"]["state"] == "cancelled"
    assert exited["drain"]["finished_at"] is not None
    events = await api.events(after=mark)
    assert [(e["kind"], e["actor"], e["drain_id"]) for e in events] == [
        ("drain.cancelled", "operator-bot", entered["drain"]["id"]),
        ("host.maintenance.exited", "operator-bot", entered["drain"]["id"]),
    ]
    assert events[1]["data"]["previous_state"] == "draining"


async def test_idle_drain_loop_does_not_spin(api: Api) -> None:
    """Regression: each reconcile pass's own (empty) write woke the drain loop again at once,
    so it ran back to back (hundreds of passes a second) instead of every 0.05 s."""
    await api.register("node-1")
    await api.add_instance("node-1")
    await _enter(
        api, force=True
    )  # a drain that stays open: every pass finds it and changes nothing
    await asyncio.sleep(0.1)
    [loop] = [loop for loop in api.controller.loops if loop.name == "drains"]
    start = loop.passes
    await asyncio.sleep(0.5)
    assert 3 <= loop.passes - start <= 20


BAD_REASONS = {"empty": "", "blank": "  \n ", "256 characters": "y" * 256, "escape": "\x1b[2J"}


async def test_enter_validates_reason(api: Api, subtests: pytest.Subtests) -> None:
    await _registered(api)
    before = await api.events()
    for case, reason in BAD_REASONS.items():
        for dry_run in (False, True):
            with subtests.test(case, dry_run=dry_run):
                body = {"reason": reason, "dry_run": dry_run}
                response = await _post(api, "maintenance/enter", body)
                assert response.status_code == 422
                assert response.json()["error"] == "invalid_input"
                assert response.json()["message"].startswith("reason ")
    assert "256" in (await _post(api, "maintenance/enter", {"reason": "y" * 256})).text
    assert (await _status(api))["maintenance"]["state"] == "in_service"
    assert await api.events() == before


async def test_enter_requires_a_reason(api: Api) -> None:
    await api.register("node-1")
    response = await _post(api, "maintenance/enter", {"dry_run": True})
    assert response.status_code == 422
    assert "reason: Field required" in response.json()["message"]


async def test_exit_validates_reason(api: Api) -> None:
    await api.register("node-1")
    await _enter(api)
    await _until_state(api, "in_maintenance")
    response = await _post(api, "maintenance/exit", {"reason": "\t"})
    assert response.status_code == 422
    assert (await _status(api))["maintenance"]["state"] == "in_maintenance"


async def test_unknown_host(api: Api) -> None:
    operator = await api.token("operator")
    for method, path, body in [
        ("POST", "/v1/hosts/ghost/maintenance/enter", {"reason": "x"}),
        ("POST", "/v1/hosts/ghost/maintenance/enter", {"reason": "x", "dry_run": True}),
        ("POST", "/v1/hosts/ghost/maintenance/exit", None),
        ("GET", "/v1/hosts/ghost/maintenance", None),
    ]:
        response = await api.call(method, path, operator, json=body)
        assert response.status_code == 404, path
        assert response.json() == {"error": "not_found", "message": "no host named 'ghost'"}


async def test_maintenance_survives_a_restart(launch: Launch) -> None:
    async with launch() as first:
        await first.register("node-1")
        await first.register("node-2")
        await first.add_instance("node-2")
        await _enter(first, "node-1")
        await _enter(first, "node-2", reason="disk swap", force=True)
        in_maintenance = await _until_state(first, "in_maintenance", "node-1")
        draining = await _status(first, "node-2")
        events = await first.events()

    async with launch() as second:
        await asyncio.sleep(0.15)  # reconcile passes of the new controller
        assert await _status(second, "node-1") == in_maintenance
        assert in_maintenance["maintenance"]["reason"] == "firmware"
        assert in_maintenance["maintenance"]["actor"] == "operator-bot"
        assert in_maintenance["drain"]["state"] == "completed"
        # node-2's drain goes on in the new controller (retries of vm-1), so only what must
        # persist is compared: the mark, the drain's identity and plan, the history so far.
        resumed = await _status(second, "node-2")
        assert resumed["maintenance"] == draining["maintenance"]
        assert draining["maintenance"]["state"] == "draining"
        assert draining["maintenance"]["reason"] == "disk swap"
        for key in ("id", "reason", "actor", "plan", "force", "created_at"):
            assert resumed["drain"][key] == draining["drain"][key], key
        assert draining["drain"]["state"] == "running"
        assert resumed["migrations"][: len(draining["migrations"])] == draining["migrations"]
        assert (await second.events())[: len(events)] == events


async def test_every_change_records_its_caller_as_actor(api: Api) -> None:
    agent = await api.create_token("agent", "rack7-agent")
    operator = await api.create_token("operator", "alice@ops")
    assert (await api.register("node-1", token=agent)).status_code == 200
    for action, body in [
        ("disable", {"reason": "r"}),
        ("enable", None),
        ("maintenance/enter", {"reason": "r"}),
        ("maintenance/exit", None),
    ]:
        response = await api.call("POST", f"/v1/hosts/node-1/{action}", operator, json=body)
        assert response.status_code == 200, response.text
    revoked = await api.create_token("reader", "temp")
    await api.ok("DELETE", f"/v1/tokens/{revoked.name}", api.admin)

    actors = {(e["kind"], e["actor"]) for e in await api.events()}
    assert {
        ("token.created", "admin"),
        ("token.revoked", "admin"),
        ("host.registered", "rack7-agent"),
        ("host.disabled", "alice@ops"),
        ("host.enabled", "alice@ops"),
        ("host.maintenance.entered", "alice@ops"),
        ("drain.started", "alice@ops"),
        ("host.maintenance.exited", "alice@ops"),
    } <= actors
    by_actor = {actor for kind, actor in actors if not kind.startswith(("drain.", "token."))}
    assert by_actor <= {"rack7-agent", "alice@ops", "system"}


async def test_retry_only_from_drain_failed(api: Api) -> None:
    await _registered(api)
    response = await _post(api, "maintenance/retry")
    assert response.status_code == 409
    assert response.json()["error"] == "illegal_transition"
    assert "cannot retry the drain in state 'in_service'" in response.json()["message"]
    await api.register("node-2")
    await api.act("node-2", "disable", {"reason": "spare parts"})
    await api.add_instance("node-1")
    await _enter(api, force=True, policy={"max_attempts": 1})  # nowhere to go: it fails
    failed = await _until_state(api, "drain_failed")
    assert "could not be moved" in failed["drain"]["error"]
    retried = await _post(api, "maintenance/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["maintenance"]["state"] == "draining"
    assert "drain.retried" in await api.kinds()
