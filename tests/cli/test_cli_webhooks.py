"""`ferry webhook ...` against a live controller, delivering to a real receiver on 127.0.0.1;
and deliveries resuming from the persisted cursor after the controller is SIGKILLed."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.api.receiver import Receiver, receiving
from tests.cli.live import Cli, LiveController, free_port, json_of, rows

HEARTBEAT_INTERVAL = 120  # hosts registered once stay up: nothing heartbeats for them here

SECRET = "cmdb-signing-secret-0123456789"
FAMILIES = ("host.maintenance.", "drain.", "migration.")


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_WEBHOOK_BACKOFF", "0.05")
    monkeypatch.setenv("FERRY_WEBHOOK_BACKOFF_MAX", "0.2")
    monkeypatch.setenv("FERRY_WEBHOOK_TIMEOUT", "2")
    monkeypatch.setenv("FERRY_WEBHOOK_MAX_ATTEMPTS", "1000")  # the dead receiver's stay pending


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


def _field(line: str) -> tuple[str, str]:
    """'last status  200' as ('last status', '200'): labels and values are two spaces apart."""
    label, value = re.split(r"\s{2,}", line, maxsplit=1)
    return label, value


def _until(check: Callable[[], Any], within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"condition still false after {within}s")


def _maintenance(cli: Cli, host: str) -> None:
    cli("host", "maintenance", "enter", host, "--reason", "BIOS", "--wait", "--timeout", "20")
    cli("host", "maintenance", "exit", host, "--reason", "done")


def _notified(controller: LiveController) -> list[str]:
    params = {"order": "asc", "limit": 1000}
    events = controller.api("GET", "/v1/events", params=params)["items"]
    return [str(e["id"]) for e in events if e["kind"].startswith(FAMILIES)]


def _delivered(controller: LiveController, receiver: Receiver, name: str) -> list[str]:
    """Wait until the receiver accepted every notified event and the cursor is past them (polled
    over the API directly: faster than running the CLI)."""

    def done() -> list[str] | None:
        wanted = _notified(controller)
        shown = controller.api("GET", f"/v1/webhooks/{name}")
        events = [i for i in receiver.accepted_ids() if not i.startswith("ping-")]
        caught_up = events == wanted and shown["pending"] == 0
        return wanted if caught_up else None

    result: list[str] = _until(done)
    return result


def test_create_list_show_test_disable_delete(
    cli: Cli, controller: LiveController, receiver: Receiver, hosts: list[str]
) -> None:
    assert cli("webhook", "list").stdout.strip() == "no webhooks"
    made = cli("webhook", "create", "cmdb", "--url", receiver.url, "--secret", SECRET)
    assert made.stdout.strip() == SECRET
    assert made.stderr.strip() == (
        "webhook cmdb created for host.maintenance, drain, migration; signing secret (shown once):"
    )
    chat = cli(
        "webhook", "create", "chat", "--url", "https://chat.example.com/hooks/T0/B0/XYZ",
        "--kind", "migration.failed", "--kind", "drain.",
    )  # fmt: skip
    generated = chat.stdout.strip()
    assert len(generated) >= 32 and generated != SECRET
    assert "created for migration.failed, drain;" in chat.stderr
    dead_url = f"http://127.0.0.1:{free_port()}/hook"
    dead = json_of(cli, "webhook", "create", "dead", "--url", dead_url)
    assert (dead["name"], dead["enabled"], dead["created_by"]) == ("dead", True, "admin")
    assert dead["secret"]

    listed = rows(cli("webhook", "list").stdout)
    assert listed[0] == [
        "NAME", "URL", "KINDS", "STATE", "CURSOR", "PENDING", "DELIVERED", "FAILURES",
    ]  # fmt: skip
    assert [(r[0], r[2], r[3], r[5]) for r in listed[1:]] == [
        ("chat", "migration.failed,drain", "enabled", "0"),
        ("cmdb", "host.maintenance,drain,migration", "enabled", "0"),
        ("dead", "host.maintenance,drain,migration", "enabled", "0"),
    ]
    listing = cli("webhook", "list", "-f", "json").stdout
    assert SECRET not in listing and generated not in listing and "secret" not in listing

    _maintenance(cli, "host1")
    wanted = _delivered(controller, receiver, "cmdb")
    assert len(wanted) >= 4
    for request in receiver.accepted():
        expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers["x-ferry-signature"] == expected
        assert request.event["source"] == "/ferry/controller"
        assert request.event["type"].startswith(("io.ferry.host.maintenance.", "io.ferry.drain."))
    text = cli("webhook", "show", "cmdb").stdout
    shown = dict(_field(line) for line in text.splitlines())
    assert (shown["name"], shown["state"], shown["pending"]) == ("cmdb", "enabled", "0")
    assert (shown["delivered"], shown["cursor"]) == (str(len(wanted)), wanted[-1])
    assert (shown["last status"], shown["last error"], shown["failures"]) == ("200", "-", "0")
    assert shown["created"].endswith("by admin")
    assert SECRET not in text

    def dead_retrying() -> dict[str, Any] | None:
        hook: dict[str, Any] = controller.api("GET", "/v1/webhooks/dead")
        return hook if hook["attempts"] >= 1 else None

    failing = _until(dead_retrying)
    assert failing["delivered"] == 0 and failing["pending"] == len(wanted)
    assert failing["last_error"].startswith(f"event {wanted[0]} (host.maintenance.entered)")

    pinged = cli("webhook", "test", "cmdb").stdout.strip()
    assert pinged.startswith("webhook cmdb: ping ping-") and ", HTTP 200 in " in pinged
    assert receiver.requests[-1].event["type"] == "io.ferry.webhook.ping"
    refused = cli.fails("webhook", "test", "dead")
    assert refused.startswith("error: webhook dead: ping not delivered: ConnectError")
    result = json.loads(cli("webhook", "test", "dead", "-f", "json", ok=False).stdout)
    assert (result["delivered"], result["status"]) == (False, None)

    assert cli("webhook", "disable", "cmdb").stdout.strip() == "webhook cmdb disabled"
    count = len(receiver.requests)
    _maintenance(cli, "host2")
    time.sleep(0.5)
    assert len(receiver.requests) == count
    enabled = cli("webhook", "enable", "cmdb").stdout.strip()
    assert enabled.startswith("webhook cmdb enabled; ") and enabled.endswith("event(s) pending")
    assert int(enabled.split("; ")[1].split()[0]) > 0
    _delivered(controller, receiver, "cmdb")

    assert cli("webhook", "delete", "dead").stdout.strip() == "webhook dead deleted"
    assert cli.fails("webhook", "show", "dead") == "error: no webhook named 'dead' (HTTP 404)"
    assert [w["name"] for w in json_of(cli, "webhook", "list")] == ["chat", "cmdb"]
    kinds = [e["kind"] for e in json_of(cli, "event", "list", "--kind", "webhook", "--limit", "50")]
    assert sorted(kinds) == sorted(
        ["webhook.created"] * 3 + ["webhook.disabled", "webhook.enabled", "webhook.deleted"]
    )


def test_refusals(cli: Cli, controller: LiveController) -> None:
    bad = cli.fails("webhook", "create", "cmdb", "--url", "ftp://cmdb.example.com/")
    assert bad == (
        "error: invalid webhook url 'ftp://cmdb.example.com/': the scheme must be http or https"
        " (HTTP 422)"
    )
    assert "--url" in cli.fails("webhook", "create", "cmdb", code=2)
    assert "matches no maintenance, drain or migration event" in cli.fails(
        "webhook", "create", "cmdb", "--url", "http://127.0.0.1/", "--kind", "instance"
    )
    assert "invalid webhook secret" in cli.fails(
        "webhook", "create", "cmdb", "--url", "http://127.0.0.1/", "--secret", "short"
    )
    cli("webhook", "create", "cmdb", "--url", "http://127.0.0.1:9/")
    duplicate = cli.fails("webhook", "create", "cmdb", "--url", "http://127.0.0.1:9/")
    assert duplicate == "error: a webhook named 'cmdb' exists already (HTTP 409)"
    assert cli.fails("webhook", "delete", "ghost") == "error: no webhook named 'ghost' (HTTP 404)"
    reader = Cli(controller.url, controller.token("viewer", "reader"))
    for args in (("list",), ("show", "cmdb"), ("test", "cmdb"), ("delete", "cmdb")):
        assert "which may not operate (HTTP 403)" in reader.fails("webhook", *args)
    anonymous = Cli(controller.url, None)
    assert "(HTTP 401)" in anonymous.fails("webhook", "list")


def test_deliveries_resume_after_sigkill(
    cli: Cli, controller: LiveController, receiver: Receiver, hosts: list[str]
) -> None:
    cli("webhook", "create", "cmdb", "--url", receiver.url, "--secret", SECRET)
    _maintenance(cli, "host1")
    before = _delivered(controller, receiver, "cmdb")

    assert controller.stop(signal.SIGKILL) == -signal.SIGKILL
    controller.start()
    cli_after = Cli(controller.url, controller.admin_token)
    _maintenance(cli_after, "host1")
    everything = _delivered(controller, receiver, "cmdb")
    assert everything[: len(before)] == before and len(everything) > len(before)
    time.sleep(0.3)
    assert receiver.accepted_ids() == everything  # nothing lost, nothing twice
