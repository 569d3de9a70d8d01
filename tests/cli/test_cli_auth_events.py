"""Tokens and roles through the CLI; the event log, including --follow over SSE."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.cli.live import FERRY, Cli, LiveController


def test_roles_through_the_cli(cli: Cli, hosts: list[str]) -> None:
    reader_secret = cli("token", "create", "alice", "--role", "reader").stdout.strip()
    reader = Cli(cli.url, reader_secret)
    assert "host1" in reader("host", "list").stdout
    denied = reader.fails("host", "disable", "host1", "--reason", "nope")
    assert "role 'reader'" in denied and "HTTP 403" in denied
    assert "HTTP 403" in reader.fails("token", "list")

    operator = Cli(cli.url, cli("token", "create", "bob", "--role", "operator").stdout.strip())
    operator("host", "disable", "host1", "--reason", "by bob")
    assert "HTTP 403" in operator.fails("token", "create", "eve", "--role", "admin")

    tokens = json.loads(cli("token", "list", "-f", "json").stdout)
    assert {t["name"]: t["role"] for t in tokens} == {
        "admin": "admin",
        "agent": "agent",
        "alice": "reader",
        "bob": "operator",
    }
    assert all("secret" not in t for t in tokens)

    cli("token", "revoke", "alice")
    assert "unknown or revoked (HTTP 401)" in reader.fails("host", "list")
    assert "HTTP 401" in Cli(cli.url, None).fails("host", "list")


def test_event_list_records_actors(cli: Cli, hosts: list[str]) -> None:
    operator = Cli(cli.url, cli("token", "create", "carol", "--role", "operator").stdout.strip())
    operator("host", "disable", "host2", "--reason", "cabling")
    operator("host", "maintenance", "enter", "host2", "--reason", "cabling", "--wait")
    events = json.loads(cli("event", "list", "--host", "host2", "-f", "json").stdout)
    actors = {e["kind"]: e["actor"] for e in events}
    assert actors["host.registered"] == "agent"
    assert actors["host.disabled"] == "carol"
    assert actors["host.maintenance.entered"] == "carol"
    assert actors["host.maintenance.completed"] == "system"
    table = cli("event", "list", "--kind", "host.maintenance").stdout
    assert "host.maintenance.entered" in table and "host.disabled" not in table


def test_event_follow_streams_new_events(cli: Cli, hosts: list[str]) -> None:
    cli("host", "disable", "host1", "--reason", "before following")
    follower = subprocess.Popen(
        [
            FERRY,
            "event",
            "list",
            "--follow",
            "--limit",
            "1",
            "-f",
            "json",
            "--host",
            "host1",
            "--kind",
            "host.disabled",
            "--kind",
            "host.enabled",
        ],
        env=cli.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        # The latest matching event comes first; everything after it is streamed, whenever the
        # stream connects, because the follower resumes from that event's id.
        first = json.loads(follower.stdout.readline())
        assert (first["kind"], first["data"]["reason"]) == ("host.disabled", "before following")
        cli("host", "disable", "host2", "--reason", "other host: filtered out")
        cli("host", "enable", "host1", "--reason", "live")
        streamed = json.loads(follower.stdout.readline())
        assert (streamed["kind"], streamed["host"], streamed["actor"]) == (
            "host.enabled",
            "host1",
            "admin",
        )
        assert streamed["id"] > first["id"]
    finally:
        follower.terminate()
        follower.wait(timeout=10)


def test_config_file_and_token_file(
    controller: LiveController, hosts: list[str], tmp_path: Path
) -> None:
    config = tmp_path / "cli.toml"
    config.write_text(
        f'url = "{controller.url}"\ntoken_file = "{controller.state_dir / "admin.token"}"\n'
    )
    cli = Cli("", None, {"FERRY_CONFIG": str(config)})
    env_without_url = cli.env()
    del env_without_url["FERRY_URL"]
    result = subprocess.run(
        [FERRY, "host", "list", "-f", "json"],
        env=env_without_url,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert [h["name"] for h in json.loads(result.stdout)] == hosts
    missing = Cli(controller.url, None, {"FERRY_CONFIG": str(tmp_path / "absent.toml")})
    assert "does not exist" in missing.fails("host", "list")


def test_serve_rejects_bad_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [FERRY, "controller", "serve", "--state-dir", str(tmp_path), "--listen", "nowhere"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "invalid controller settings" in result.stderr and "Traceback" not in result.stderr
