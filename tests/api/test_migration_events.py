"""POST /v1/agent/hosts/{name}/migration-events: an agent's guests' migration events wake the
controller's migration loop, counted at GET /v1/metrics; and the agent's forwarder that sends
them (coalescing per guest, dropping what the controller refuses)."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.agent.drivers.base import MigrationEvent
from ferry.agent.events import EventForwarder
from ferry.db.models import Host, Instance, Migration
from ferry.orchestrator.migration.jobs import Job
from tests.api.conftest import Api

ID1 = "00000000-0000-0000-0000-000000000001"
ID2 = "00000000-0000-0000-0000-000000000002"


def _body(*ids: str, status: str = "active") -> dict[str, Any]:
    return {"events": [{"instance_id": i, "status": status, "passes": 1} for i in ids]}


async def _in_flight(api: Api, instance_id: str, source: str, dest: str) -> None:
    """As the migration loop's last pass saw it: one migration of `instance_id` in flight (the
    loop is stopped first, so that no pass of an empty database forgets it)."""
    await api.stop_loop("migrations")
    job = Job(
        Migration(id="m1", state="running"),
        Instance(id=instance_id),
        Host(id=1, name=source),
        Host(id=2, name=dest),
    )
    api.controller.migrator.track([job])


async def _counts(api: Api) -> tuple[int, int]:
    metrics = await api.ok("GET", "/v1/metrics", await api.token("reader"))
    return metrics["migration_events_received"], metrics["migration_events_accepted"]


async def test_events_of_a_migration_in_flight_are_accepted(api: Api) -> None:
    agent = await api.token("agent")
    for name in ("node-1", "node-2"):
        assert (await api.register(name)).is_success
    await _in_flight(api, ID1, "node-1", "node-2")
    url = "/v1/agent/hosts/node-1/migration-events"
    answer = await api.call("POST", url, agent, json=_body(ID1, ID2))
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"host": "node-1", "accepted": 1}  # ID2 migrates nowhere
    assert await _counts(api) == (2, 1)
    answer = await api.call("POST", "/v1/agent/hosts/node-2/migration-events", agent,
                            json=_body(ID1, status="completed"))  # fmt: skip
    assert answer.json()["accepted"] == 1  # the destination's events count as well
    assert await _counts(api) == (3, 2)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"events": []}, "at least 1"),
        (_body("not-an-id"), "pattern"),
        ({"events": [{"instance_id": ID1, "status": "active", "passes": -1}]}, "greater"),
        ({"events": [{"instance_id": ID1, "status": "active", "extra": 1}]}, "extra"),
        ({}, "events"),
    ],
)
async def test_bad_reports_are_refused_with_a_reason(
    api: Api, body: dict[str, Any], fragment: str
) -> None:
    await api.register("node-1")
    agent = await api.token("agent")
    answer = await api.call("POST", "/v1/agent/hosts/node-1/migration-events", agent, json=body)
    assert answer.status_code == 422, answer.text
    assert fragment in answer.text
    assert await _counts(api) == (0, 0)


async def test_an_unknown_host_is_named_in_a_404(api: Api) -> None:
    agent = await api.token("agent")
    answer = await api.call("POST", "/v1/agent/hosts/ghost/migration-events", agent,
                            json=_body(ID1))  # fmt: skip
    assert answer.status_code == 404 and "ghost" in answer.text


async def test_the_forwarder_coalesces_per_guest_and_reaches_the_controller(api: Api) -> None:
    await api.register("node-1")
    await api.register("node-2")
    await _in_flight(api, ID1, "node-1", "node-2")
    agent = await api.token("agent")
    api.client.headers["Authorization"] = f"Bearer {agent.secret}"
    forwarder = EventForwarder(api.client, "node-1")
    for passes in (1, 2, 3):  # three events of one guest before the task runs: one is sent
        forwarder.notify(MigrationEvent(ID1, "active", passes))
    forwarder.notify(MigrationEvent(ID2, "active", 1))
    pending = dict(forwarder._pending)
    assert pending[ID1].passes == 3 and len(pending) == 2
    await forwarder._send(list(pending.values()))
    assert (forwarder.sent, forwarder.dropped) == (2, 0)
    assert await _counts(api) == (2, 1)


async def test_the_forwarder_drops_what_the_controller_refuses(api: Api) -> None:
    agent = await api.token("agent")
    api.client.headers["Authorization"] = f"Bearer {agent.secret}"
    forwarder = EventForwarder(api.client, "never-registered")
    await forwarder._send([MigrationEvent(ID1, "completed", 4)])  # 404: logged, not raised
    assert (forwarder.sent, forwarder.dropped) == (0, 1)
