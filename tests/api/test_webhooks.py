"""Webhooks through the API, delivering over real HTTP to receivers on 127.0.0.1: CloudEvents
documents and their signatures, kind filters, retries with backoff, dropped events, isolation of
slow and dead receivers, cursors across restarts, test pings, validation and roles."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.api.app import create_app
from ferry.config import load_controller_settings
from tests.api.conftest import RECONCILE_INTERVAL, Api, Launch
from tests.api.receiver import Received, Receiver, receiving
from tests.cli.live import free_port

FAMILIES = ("host.maintenance", "drain", "migration")
SECRET = "s3cret-for-the-cmdb-0123456789"
BACKOFF = 0.05
FAST: dict[str, Any] = {
    "webhook_backoff": BACKOFF,
    "webhook_backoff_max": 0.4,
    "webhook_max_attempts": 5,
    "webhook_timeout": 2.0,
}


@pytest.fixture
def webhook_settings() -> dict[str, Any]:
    """Settings of the controller under test; a test parametrizes this name to change them."""
    return FAST


@pytest.fixture
def launch(tmp_path: Path, webhook_settings: dict[str, Any]) -> Launch:
    @asynccontextmanager
    async def start() -> AsyncIterator[Api]:
        settings = load_controller_settings(
            state_dir=tmp_path,
            heartbeat_interval=5.0,
            reconcile_interval=RECONCILE_INTERVAL,
            **{**FAST, **webhook_settings},
        )
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://ferry.test") as client,
        ):
            yield Api(app, client, tmp_path)

    return start


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


def _matches(kind: str, prefix: str) -> bool:
    return kind == prefix or kind.startswith(prefix + ".")


def _wanted(kind: str, prefixes: tuple[str, ...] = FAMILIES) -> bool:
    return any(_matches(kind, f) for f in FAMILIES) and any(_matches(kind, p) for p in prefixes)


def _signed(request: Received, secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers["x-ferry-signature"], expected)


async def _hook(api: Api, name: str, url: str, **body: Any) -> dict[str, Any]:
    operator = await api.token("operator")
    response = await api.call(
        "POST", "/v1/webhooks", operator, json={"name": name, "url": url, **body}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _show(api: Api, name: str) -> dict[str, Any]:
    shown: dict[str, Any] = await api.ok("GET", f"/v1/webhooks/{name}", api.admin)
    return shown


async def _settled(api: Api, name: str) -> dict[str, Any]:
    """The webhook once nothing is pending (a receiver sees an event before its cursor moves)."""

    async def settled() -> dict[str, Any] | None:
        shown = await _show(api, name)
        return shown if shown["pending"] == 0 else None

    return await api.eventually(settled)


async def _maintenance(api: Api, host: str = "node-1") -> None:
    """Enter maintenance on an empty host, wait until it is in maintenance, and exit."""
    await api.act(host, "maintenance/enter", {"reason": "firmware"})

    async def in_maintenance() -> bool:
        return bool((await api.host(host))["maintenance"]["state"] == "in_maintenance")

    await api.eventually(in_maintenance)
    await api.act(host, "maintenance/exit", {"reason": "done"})


async def _notified(api: Api, prefixes: tuple[str, ...] = FAMILIES) -> list[dict[str, Any]]:
    return [e for e in await api.events() if _wanted(e["kind"], prefixes)]


async def _all_delivered(
    api: Api,
    receiver: Receiver,
    prefixes: tuple[str, ...] = FAMILIES,
    within: float = 5.0,
    hook: str | None = None,
) -> list[dict[str, Any]]:
    """Wait until the receiver accepted every event matching `prefixes` (and, given `hook`, that
    webhook's cursor is past them); those events."""

    async def done() -> list[dict[str, Any]] | None:
        expected = await _notified(api, prefixes)
        accepted = receiver.accepted_ids()
        if accepted != [str(e["id"]) for e in expected]:
            return None
        if hook is not None and (await _show(api, hook))["cursor"] != expected[-1]["id"]:
            return None
        return expected

    return await api.eventually(done, within=within)


async def test_create_list_show_delete(api: Api, receiver: Receiver) -> None:
    await api.register("node-1")
    await api.token("operator")
    last = (await api.events())[-1]["id"]
    created = await _hook(api, "cmdb", receiver.url)
    secret = created.pop("secret")
    assert len(secret) >= 32
    assert {k: created[k] for k in ("name", "url", "kinds", "enabled", "created_by")} == {
        "name": "cmdb",
        "url": receiver.url,
        "kinds": list(FAMILIES),
        "enabled": True,
        "created_by": "operator-bot",
    }
    # A new webhook starts after the events committed before it.
    assert (created["cursor"], created["pending"], created["attempts"]) == (last, 0, 0)
    assert (created["delivered"], created["failures"], created["last_error"]) == (0, 0, None)
    narrow = await _hook(api, "chat", receiver.url, kinds=["migration.failed", "drain."])
    assert narrow["kinds"] == ["migration.failed", "drain"]
    assert narrow["secret"] != secret

    operator = await api.token("operator")
    listed = await api.ok("GET", "/v1/webhooks", operator)
    assert [w["name"] for w in listed] == ["chat", "cmdb"]
    shown = await _show(api, "cmdb")
    assert shown == {**created, "cursor": shown["cursor"]}
    for body in (listed, shown, await api.events()):
        assert secret not in str(body) and "secret" not in str(body)

    assert (await api.call("DELETE", "/v1/webhooks/chat", operator)).status_code == 204
    missing = await api.call("GET", "/v1/webhooks/chat", operator)
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "message": "no webhook named 'chat'"}
    assert (await api.call("DELETE", "/v1/webhooks/chat", operator)).status_code == 404
    assert [w["name"] for w in await api.ok("GET", "/v1/webhooks", operator)] == ["cmdb"]
    events = await api.events(kind="webhook")
    assert [(e["kind"], e["actor"], e["data"]["webhook"]) for e in events] == [
        ("webhook.created", "operator-bot", "cmdb"),
        ("webhook.created", "operator-bot", "chat"),
        ("webhook.deleted", "operator-bot", "chat"),
    ]
    assert events[0]["data"]["receiver"] == "127.0.0.1"


async def test_events_arrive_as_signed_cloudevents(api: Api, receiver: Receiver) -> None:
    await api.register("node-1")
    await _hook(api, "cmdb", receiver.url, secret=SECRET)
    sent_after = int(time.time())
    await _maintenance(api)
    expected = await _all_delivered(api, receiver, hook="cmdb")
    kinds = [e["kind"] for e in expected]
    assert kinds[0] == "host.maintenance.entered" and kinds[-1] == "host.maintenance.exited"
    assert {"drain.started", "drain.completed", "host.maintenance.completed"} <= set(kinds)

    for event, request in zip(expected, receiver.accepted(), strict=True):
        assert request.path == "/hook"
        assert request.headers["content-type"] == "application/cloudevents+json"
        assert _signed(request, SECRET)
        assert not _signed(request, SECRET + "x")
        assert sent_after - 1 <= int(request.headers["x-ferry-timestamp"]) <= time.time() + 1
        assert request.headers["x-ferry-attempt"] == "1"
        assert request.headers["x-ferry-webhook"] == "cmdb"
        document = request.event
        sent_at = datetime.fromisoformat(document.pop("time").replace("Z", "+00:00"))
        assert sent_at == datetime.fromisoformat(event["at"])
        assert document == {
            "specversion": "1.0",
            "id": str(event["id"]),
            "source": "/ferry/controller",
            "type": f"io.ferry.{event['kind']}",
            "subject": "node-1",
            "datacontenttype": "application/json",
            "data": {
                "actor": event["actor"],
                "message": event["message"],
                "host": "node-1",
                "instance_id": None,
                "migration_id": None,
                "drain_id": event["drain_id"],
                "data": event["data"],
            },
        }
    assert expected[0]["actor"] == "operator-bot"
    assert expected[1]["drain_id"] is not None

    shown = await _show(api, "cmdb")
    assert (shown["cursor"], shown["pending"]) == (expected[-1]["id"], 0)
    assert (shown["delivered"], shown["failures"], shown["attempts"]) == (len(expected), 0, 0)
    assert shown["last_status"] == 200 and shown["last_delivery_at"]


async def test_kind_prefixes_narrow_what_each_webhook_gets(api: Api) -> None:
    await api.register("node-1")
    await api.register("node-2")
    await api.add_instance("node-1", "vm-1")
    narrow = ("drain", "migration.failed", "host.maintenance.exited")
    with receiving() as everything, receiving() as some, receiving() as migrations:
        await _hook(api, "all", everything.url)
        await _hook(api, "some", some.url, kinds=list(narrow))
        await _hook(api, "moves", migrations.url, kinds=["migration"])
        # The drain of node-1 tries to move vm-1 (node-2 has no agent, so it fails).
        await api.act("node-1", "maintenance/enter", {"reason": "firmware"})

        async def some_migration_failed() -> bool:
            return "migration.failed" in await api.kinds()

        await api.eventually(some_migration_failed)
        await api.act("node-1", "maintenance/exit", {"reason": "done"})
        await _all_delivered(api, everything)
        await _all_delivered(api, some, narrow)
        await _all_delivered(api, migrations, ("migration",))

    kinds = {r.event["type"].removeprefix("io.ferry.") for r in everything.accepted()}
    assert {"host.maintenance.entered", "drain.started", "host.maintenance.exited"} <= kinds
    assert {"migration.scheduled", "migration.failed"} <= kinds
    assert not {k for k in kinds if k.startswith(("host.registered", "token", "webhook"))}
    got = {r.event["type"].removeprefix("io.ferry.") for r in some.accepted()}
    assert {"migration.failed", "host.maintenance.exited", "drain.started"} <= got
    assert all(_wanted(k, narrow) for k in got)
    moves = [r.event for r in migrations.accepted()]
    assert {e["type"] for e in moves} <= {f"io.ferry.{k}" for k in kinds if k.startswith("mig")}
    vm = moves[0]["data"]["instance_id"]
    assert vm and all(e["subject"] == vm for e in moves)
    assert any(e["data"]["migration_id"] for e in moves)


@pytest.mark.parametrize("webhook_settings", [{**FAST, "webhook_backoff": 0.1}])
async def test_a_failing_receiver_gets_the_event_on_a_later_attempt(api: Api) -> None:
    answers = iter([500, 503])

    def flaky(_request: Received) -> int:
        return next(answers, 200)

    await api.register("node-1")
    with receiving(flaky) as receiver:
        await _hook(api, "cmdb", receiver.url, secret=SECRET)
        await api.act("node-1", "maintenance/enter", {"reason": "firmware"})
        first = (await api.events(kind="host.maintenance.entered"))[0]

        async def accepted() -> list[Received]:
            return receiver.accepted()

        await api.eventually(accepted)
        await _settled(api, "cmdb")
    tries = [r for r in receiver.requests if r.event["id"] == str(first["id"])]
    assert [(r.status, r.headers["x-ferry-attempt"]) for r in tries] == [
        (500, "1"),
        (503, "2"),
        (200, "3"),
    ]
    assert all(_signed(r, SECRET) for r in tries)
    assert tries[0].body == tries[1].body == tries[2].body
    # Exponential backoff: 0.1 s, then 0.2 s.
    assert tries[1].at - tries[0].at >= 0.1 * 0.9
    assert tries[2].at - tries[1].at >= 0.2 * 0.9
    shown = await _show(api, "cmdb")
    assert shown["failures"] == 0 and shown["delivered"] >= 1
    assert shown["last_error"] == (
        f"event {first['id']} (host.maintenance.entered) attempt 2/5: HTTP 503 Service Unavailable"
    )
    assert shown["last_error_at"]


@pytest.mark.parametrize("webhook_settings", [{**FAST, "webhook_max_attempts": 3}])
async def test_an_event_failing_every_attempt_is_dropped_and_the_rest_go_on(api: Api) -> None:
    def poisoned(request: Received) -> int:
        return 500 if request.event["type"] == "io.ferry.drain.started" else 200

    await api.register("node-1")
    with receiving(poisoned) as receiver:
        await _hook(api, "cmdb", receiver.url)
        await _maintenance(api)
        expected = await _notified(api)
        bad = next(e for e in expected if e["kind"] == "drain.started")

        async def caught_up() -> bool:
            wanted = [str(e["id"]) for e in expected if e is not bad]
            return receiver.accepted_ids() == wanted

        await api.eventually(caught_up)
        shown = await _settled(api, "cmdb")
    assert [r.status for r in receiver.requests if r.event["id"] == str(bad["id"])] == [500] * 3
    assert (shown["cursor"], shown["pending"], shown["attempts"]) == (expected[-1]["id"], 0, 0)
    assert (shown["failures"], shown["delivered"]) == (1, len(expected) - 1)
    assert shown["last_error"] == (
        f"event {bad['id']} (drain.started) dropped after 3 attempts:"
        " HTTP 500 Internal Server Error"
    )
    dropped = await api.events(kind="webhook.dropped")
    assert [(e["actor"], e["data"]["event_id"], e["data"]["attempts"]) for e in dropped] == [
        ("system", bad["id"], 3)
    ]
    assert dropped[0]["message"].startswith(f"webhook cmdb dropped event {bad['id']}")


@pytest.mark.parametrize(
    "webhook_settings",
    [{**FAST, "webhook_timeout": 3.0, "webhook_backoff": 1.0, "webhook_max_attempts": 50}],
)
async def test_dead_and_hung_receivers_delay_neither_others_nor_maintenance(api: Api) -> None:
    await api.register("node-1")
    with receiving() as live, receiving(lambda _request: None) as hung:
        await _hook(api, "dead", f"http://127.0.0.1:{free_port()}/hook")
        await _hook(api, "hung", hung.url)
        await _hook(api, "live", live.url)
        await api.token("operator")

        started = time.monotonic()
        await api.act("node-1", "maintenance/enter", {"reason": "firmware"})
        entered = time.monotonic() - started

        async def in_maintenance() -> bool:
            return bool((await api.host())["maintenance"]["state"] == "in_maintenance")

        await api.eventually(in_maintenance)
        started = time.monotonic()
        await api.act("node-1", "maintenance/exit", {"reason": "done"})
        exited = time.monotonic() - started
        await _all_delivered(api, live, within=2.0, hook="live")
        caught_up = time.monotonic() - started
        assert entered < 0.5 and exited < 0.5, (entered, exited)
        # Everything reached the live receiver long before the hung one's first 3 s deadline.
        assert caught_up < 2.0, caught_up
        assert len(hung.requests) == 1 and hung.requests[0].status is None

        dead = await _show(api, "dead")
        assert dead["attempts"] >= 1 and dead["delivered"] == 0
        assert dead["pending"] == len(await _notified(api))
        assert "attempt" in dead["last_error"] and "Connect" in dead["last_error"]
        hung_now = await _show(api, "hung")
        assert (hung_now["delivered"], hung_now["attempts"]) == (0, 0)  # still waiting
        assert (await _show(api, "live"))["pending"] == 0

        # A dead receiver does not hold up the next maintenance either.
        await api.act("node-1", "maintenance/enter", {"reason": "again"})
        await api.eventually(in_maintenance)
        await _all_delivered(api, live, within=2.0)

        async def hung_timed_out() -> dict[str, Any] | None:
            shown = await _show(api, "hung")
            return shown if shown["attempts"] >= 1 else None

        hung_later = await api.eventually(hung_timed_out, within=5.0)
        assert hung_later["last_error"].endswith("attempt 1/50: no answer within 3s")


@pytest.mark.parametrize("webhook_settings", [{**FAST, "webhook_max_attempts": 1000}])
async def test_the_cursor_survives_a_restart(launch: Launch) -> None:
    down = False

    def answer(_request: Received) -> int:
        return 503 if down else 200

    with receiving(answer) as receiver:
        async with launch() as api:
            await api.register("node-1")
            await _hook(api, "cmdb", receiver.url)
            await _maintenance(api)
            before = await _all_delivered(api, receiver, hook="cmdb")
            cursor = (await _show(api, "cmdb"))["cursor"]
            assert cursor == before[-1]["id"]

            down = True  # the receiver fails while the next events happen ...
            await _maintenance(api)

            async def failing() -> bool:
                return bool((await _show(api, "cmdb"))["attempts"] >= 2)

            await api.eventually(failing)
            pending = (await _show(api, "cmdb"))["pending"]
            assert pending == len(await _notified(api)) - len(before)
        # ... and the controller stops with the cursor behind them.
        down = False
        async with launch() as api:
            shown = await _show(api, "cmdb")
            assert (shown["cursor"], shown["name"]) == (cursor, "cmdb")
            everything = await _all_delivered(api, receiver)
            await asyncio.sleep(0.3)  # nothing is delivered a second time
            assert receiver.accepted_ids() == [str(e["id"]) for e in everything]
    assert len(everything) == len(before) + pending
    failed = [r for r in receiver.requests if r.status == 503]
    assert failed and {r.event["id"] for r in failed} <= set(receiver.accepted_ids()[len(before) :])


async def test_disabled_webhooks_wait_and_catch_up_when_enabled(
    api: Api, receiver: Receiver
) -> None:
    await api.register("node-1")
    await _hook(api, "cmdb", receiver.url)
    operator = await api.token("operator")
    disabled = await api.ok("POST", "/v1/webhooks/cmdb/disable", operator)
    assert disabled["enabled"] is False
    await _maintenance(api)
    await asyncio.sleep(0.3)
    assert receiver.requests == []
    assert (await _show(api, "cmdb"))["pending"] == len(await _notified(api))
    enabled = await api.ok("POST", "/v1/webhooks/cmdb/enable", operator)
    assert enabled["enabled"] is True
    await _all_delivered(api, receiver)
    assert [e["kind"] for e in await api.events(kind="webhook")] == [
        "webhook.created",
        "webhook.disabled",
        "webhook.enabled",
    ]


async def test_deleting_a_webhook_stops_its_deliveries(api: Api, receiver: Receiver) -> None:
    await api.register("node-1")
    await _hook(api, "cmdb", receiver.url)
    await _maintenance(api)
    await _all_delivered(api, receiver)
    count = len(receiver.requests)
    operator = await api.token("operator")
    assert (await api.call("DELETE", "/v1/webhooks/cmdb", operator)).status_code == 204
    await _maintenance(api)
    await asyncio.sleep(0.3)
    assert len(receiver.requests) == count


async def test_a_test_ping_reports_the_receivers_answer(api: Api) -> None:
    await api.register("node-1")
    operator = await api.token("operator")
    with receiving() as good, receiving(lambda _request: 500) as bad:
        await _hook(api, "good", good.url, secret=SECRET)
        await _hook(api, "bad", bad.url)
        await _hook(api, "dead", f"http://127.0.0.1:{free_port()}/")
        before = await api.events()

        result = await api.ok("POST", "/v1/webhooks/good/test", operator)
        assert (result["name"], result["delivered"], result["status"]) == ("good", True, 200)
        assert result["error"] is None and result["elapsed_ms"] >= 0
        [ping] = good.requests
        assert _signed(ping, SECRET)
        assert ping.event["id"] == result["event_id"] and result["event_id"].startswith("ping-")
        assert ping.event["type"] == "io.ferry.webhook.ping"
        assert ping.event["subject"] == "good"
        assert ping.event["data"]["actor"] == "operator-bot"

        failed = await api.ok("POST", "/v1/webhooks/bad/test", operator)
        assert (failed["delivered"], failed["status"]) == (False, 500)
        assert failed["error"] == "HTTP 500 Internal Server Error"
        dead = await api.ok("POST", "/v1/webhooks/dead/test", operator)
        assert (dead["delivered"], dead["status"]) == (False, None)
        assert dead["error"].startswith("ConnectError")
        missing = await api.call("POST", "/v1/webhooks/ghost/test", operator)
        assert missing.status_code == 404

        assert await api.events() == before  # a ping is not an event and moves no cursor
        assert (await _show(api, "good"))["delivered"] == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"url": "ftp://example.com/x"}, "the scheme must be http or https"),
        ({"url": "example.com/hook"}, "the scheme must be http or https"),
        ({"url": "http://"}, "a host is required"),
        ({"url": "https:///path"}, "a host is required"),
        ({"url": "http://exa mple.com/"}, "no spaces"),
        ({"url": "http://example.com:99999/"}, "invalid webhook url"),
        ({"url": ""}, "invalid webhook url ''"),
        ({"url": "http://x/" + "a" * 2048}, "url"),
        ({"kinds": ["instance"]}, "kind prefix 'instance' matches no maintenance"),
        ({"kinds": ["host.up"]}, "kind prefix 'host.up' matches no"),
        ({"kinds": ["Migration"]}, "invalid kind prefix 'Migration'"),
        ({"kinds": ["migration", ""]}, "invalid kind prefix ''"),
        ({"kinds": ["drain"] * 33}, "kinds"),
        ({"secret": "short"}, "invalid webhook secret"),
        ({"secret": "with spaces inside it"}, "invalid webhook secret"),
        ({"name": "CMDB"}, "invalid webhook name 'CMDB'"),
        ({"extra": 1}, "extra"),
        ({"url": None}, "url"),
    ],
)
async def test_invalid_requests_are_refused(api: Api, body: dict[str, Any], message: str) -> None:
    operator = await api.token("operator")
    request = {"name": "cmdb", "url": "https://cmdb.example.com/ferry", **body}
    response = await api.call("POST", "/v1/webhooks", operator, json=request)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_input"
    assert message in response.json()["message"]
    assert await api.ok("GET", "/v1/webhooks", operator) == []
    assert await api.kinds(kind="webhook") == []


async def test_a_duplicate_name_conflicts(api: Api) -> None:
    await _hook(api, "cmdb", "https://cmdb.example.com/ferry")
    operator = await api.token("operator")
    again = {"name": "cmdb", "url": "http://other.example.com/"}
    response = await api.call("POST", "/v1/webhooks", operator, json=again)
    assert response.status_code == 409
    assert response.json() == {
        "error": "conflict",
        "message": "a webhook named 'cmdb' exists already",
    }
    assert (await _show(api, "cmdb"))["url"] == "https://cmdb.example.com/ferry"


async def test_roles(api: Api) -> None:
    await _hook(api, "cmdb", "https://cmdb.example.com/ferry")
    body = {"name": "chat", "url": "https://chat.example.com/hook"}
    calls = [
        ("GET", "/v1/webhooks", None),
        ("POST", "/v1/webhooks", body),
        ("GET", "/v1/webhooks/cmdb", None),
        ("DELETE", "/v1/webhooks/cmdb", None),
        ("POST", "/v1/webhooks/cmdb/test", None),
        ("POST", "/v1/webhooks/cmdb/disable", None),
        ("POST", "/v1/webhooks/cmdb/enable", None),
    ]
    for method, path, json in calls:
        anonymous = await api.call(method, path, None, json=json)
        assert anonymous.status_code == 401, (method, path)
        assert anonymous.json()["error"] == "unauthenticated"
        for role in ("reader", "agent"):
            refused = await api.call(method, path, await api.token(role), json=json)
            assert refused.status_code == 403, (method, path, role)
            assert "which may not operate" in refused.json()["message"]
    assert [w["name"] for w in await api.ok("GET", "/v1/webhooks", api.admin)] == ["cmdb"]
    admin = await api.call("POST", "/v1/webhooks", api.admin, json=body)
    assert admin.status_code == 201
    assert admin.json()["created_by"] == "admin"
