"""The event log: filters, cursor paging both ways, parameter validation; error bodies are JSON."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api


@pytest.fixture
async def history(api: Api) -> Api:
    """Two hosts: node-1 disabled and enabled, node-2 through maintenance and back."""
    await api.register("node-1")
    await api.register("node-2")
    await api.act("node-1", "disable", {"reason": "r"})
    await api.act("node-1", "enable")
    await api.act("node-2", "maintenance/enter", {"reason": "r"})
    await api.eventually(lambda: api.events(kind="host.maintenance.completed"))
    await api.act("node-2", "maintenance/exit")
    return api


async def _page(api: Api, **params: Any) -> dict[str, Any]:
    page: dict[str, Any] = await api.ok("GET", "/v1/events", api.admin, params=params)
    return page


async def test_kind_exact(history: Api) -> None:
    events = await history.events(kind="host.registered")
    assert [(e["kind"], e["host"]) for e in events] == [
        ("host.registered", "node-1"),
        ("host.registered", "node-2"),
    ]


KIND_FILTERS: list[tuple[str | list[str], list[str]]] = [
    (
        "host.maintenance",
        ["host.maintenance.entered", "host.maintenance.completed", "host.maintenance.exited"],
    ),
    ("drain", ["drain.started", "drain.completed"]),
    (["drain.completed", "host.disabled"], ["host.disabled", "drain.completed"]),
    ("host.main", []),  # a prefix ends at a dot
    ("host.maintenance.", []),
    ("maintenance", []),
]


async def test_kind_prefix(history: Api, subtests: pytest.Subtests) -> None:
    for kinds, expected in KIND_FILTERS:
        with subtests.test(kind=kinds):
            assert await history.kinds(kind=kinds) == expected


async def test_host_and_actor_filters(history: Api) -> None:
    node_1 = await history.events(host="node-1")
    assert [e["kind"] for e in node_1] == ["host.registered", "host.disabled", "host.enabled"]
    assert {e["host"] for e in await history.events(host="node-2")} == {"node-2"}
    assert await history.kinds(actor="operator-bot") == [
        "host.disabled",
        "host.enabled",
        "host.maintenance.entered",
        "drain.started",
        "host.maintenance.exited",
    ]
    assert await history.kinds(actor="system") == [
        "token.created",  # the bootstrap admin token
        "drain.completed",
        "host.maintenance.completed",
    ]
    assert await history.kinds(actor="operator-bot", host="node-1", kind="host.enabled") == [
        "host.enabled"
    ]
    assert await history.events(host="node-3") == []
    assert await history.events(actor="nobody") == []


async def test_paging_backwards_walks_every_event_once(
    history: Api, subtests: pytest.Subtests
) -> None:
    await history.act("node-1", "disable", {"reason": "r"})
    await history.act("node-1", "enable")
    await history.act("node-1", "disable", {"reason": "r"})
    everything = await _page(history, limit=1000)
    ids = [e["id"] for e in everything["items"]]
    assert everything["next_cursor"] is None
    assert ids == list(range(15, 0, -1))  # newest first, no gaps

    for limit in (1, 4, 5):  # 15 events: a short last page, and pages that end exactly
        with subtests.test(limit=limit):
            walked: list[int] = []
            page = await _page(history, limit=limit)
            while True:
                assert len(page["items"]) <= limit
                walked += [e["id"] for e in page["items"]]
                if page["next_cursor"] is None:
                    break
                assert page["next_cursor"] == walked[-1]
                page = await _page(history, limit=limit, before=page["next_cursor"])
            assert walked == ids


async def test_paging_forwards_with_after(history: Api) -> None:
    everything = [e["id"] for e in (await _page(history, limit=1000, order="asc"))["items"]]
    assert everything == sorted(everything)
    walked: list[int] = []
    cursor = 0
    while cursor is not None:
        page = await _page(history, limit=5, order="asc", after=cursor)
        walked += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
    assert walked == everything
    middle = everything[len(everything) // 2]
    later = (await _page(history, order="asc", after=middle, limit=1000))["items"]
    assert [e["id"] for e in later] == [i for i in everything if i > middle]


async def test_paging_with_a_filter(history: Api) -> None:
    first = await _page(history, kind="host", limit=2)
    second = await _page(history, kind="host", limit=2, before=first["next_cursor"])
    kinds = [e["kind"] for e in first["items"] + second["items"]]
    assert len(kinds) == 4
    assert all(kind.startswith("host.") for kind in kinds)
    assert first["items"][-1]["id"] > second["items"][0]["id"]


async def test_default_page_is_newest_first(history: Api) -> None:
    page = await _page(history)
    assert page["items"][0]["kind"] == "host.maintenance.exited"
    assert page["next_cursor"] is None  # fewer than the default limit of 100


BAD_PARAMETERS: list[tuple[str, Any]] = [
    ("limit", 1001),
    ("limit", 0),
    ("limit", "many"),
    ("order", "sideways"),
    ("order", "ASC"),
    ("before", 0),
    ("after", -1),
    ("since", "yesterday"),
]


async def test_bad_parameters(api: Api, subtests: pytest.Subtests) -> None:
    for field, value in BAD_PARAMETERS:
        with subtests.test(field=field, value=value):
            response = await api.call("GET", "/v1/events", api.admin, params={field: value})
            assert response.status_code == 422
            assert response.json()["error"] == "invalid_input"
            assert response.json()["message"].startswith(f"{field}: ")


async def test_limit_of_1000_is_allowed(api: Api) -> None:
    assert len((await _page(api, limit=1000))["items"]) == 1


async def test_unknown_routes_answer_json(api: Api, subtests: pytest.Subtests) -> None:
    for method, path, status, code in [
        ("GET", "/v1/nothing", 404, "not_found"),
        ("GET", "/nothing", 404, "not_found"),  # "/" itself redirects to the dashboard
        ("GET", "/ui/nothing.js", 404, "not_found"),
        ("GET", "/v2/hosts", 404, "not_found"),
        ("DELETE", "/v1/hosts", 405, "method_not_allowed"),
        ("PUT", "/v1/events", 405, "method_not_allowed"),
    ]:
        with subtests.test(method=method, path=path):
            response = await api.call(method, path, api.admin)
            assert response.status_code == status
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"] == code
            assert response.json()["message"]


MALFORMED_TARGETS = [
    ("admin", "/v1/tokens"),
    ("agent", "/v1/agent/register"),
    ("operator", "/v1/hosts/node-1/disable"),
    ("operator", "/v1/hosts/node-1/maintenance/enter"),
]


MALFORMED_BODIES = [b"{not json", b'{"reason": "x"', b"", b"[1, 2]", b'"text"', b"\xff\xfe"]


async def test_malformed_bodies_are_422(api: Api, subtests: pytest.Subtests) -> None:
    await api.register("node-1")
    tokens = {role: await api.token(role) for role, _path in MALFORMED_TARGETS}
    before = await api.events()
    for content in MALFORMED_BODIES:
        for role, path in MALFORMED_TARGETS:
            with subtests.test(path=path, content=content):
                headers = {**tokens[role].headers, "content-type": "application/json"}
                response = await api.client.post(path, content=content, headers=headers)
                assert response.status_code == 422, response.text
                assert response.headers["content-type"] == "application/json"
                assert response.json()["error"] == "invalid_input"
                assert response.json()["message"]
    host = await api.host("node-1")
    assert (host["admin"]["state"], host["maintenance"]["state"]) == ("enabled", "in_service")
    assert await api.events() == before


async def test_stream_is_documented_as_events_only(api: Api) -> None:
    """GET /v1/events/stream answers text/event-stream and nothing else (the document also
    offered application/json); each event's data is an EventOut."""
    document = (await api.client.get("/openapi.json")).json()
    ok = document["paths"]["/v1/events/stream"]["get"]["responses"]["200"]
    assert list(ok["content"]) == ["text/event-stream"]
    event = ok["content"]["text/event-stream"]["schema"]
    assert event["required"] == ["id", "event", "data"]
    ref = event["properties"]["data"]["contentSchema"]["$ref"]
    assert ref.rsplit("/", 1)[-1] in document["components"]["schemas"]
