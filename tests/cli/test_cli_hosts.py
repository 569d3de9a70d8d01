"""`ferry host ...` against a live controller: tables, JSON, reasons, and error lines."""

from __future__ import annotations

import json

from tests.cli.live import Cli, LiveController


def test_host_list_shows_every_host_in_table_and_json(cli: Cli, hosts: list[str]) -> None:
    table = cli("host", "list").stdout
    assert table.splitlines()[0].split()[:4] == ["NAME", "LIVENESS", "ADMIN", "MAINTENANCE"]
    for name in hosts:
        assert any(line.startswith(name) and "in_service" in line for line in table.splitlines())
    listed = json.loads(cli("host", "list", "-f", "json").stdout)
    assert [h["name"] for h in listed] == hosts
    assert all(h["maintenance"]["schedulable"] for h in listed)


def test_host_list_filters_by_maintenance(cli: Cli, hosts: list[str]) -> None:
    cli("host", "maintenance", "enter", "host2", "--reason", "disk swap", "--wait")
    listed = json.loads(cli("host", "list", "--maintenance", "in_maintenance", "-f", "json").stdout)
    assert [h["name"] for h in listed] == ["host2"]
    error = cli.fails("host", "list", "--maintenance", "sideways")
    assert "maintenance" in error and "HTTP 422" in error


def test_disable_and_enable_with_reasons(cli: Cli, hosts: list[str]) -> None:
    out = cli("host", "disable", "host1", "--reason", "flaky NIC", "-f", "json").stdout
    assert json.loads(out)["admin"] == {
        "state": "disabled",
        "reason": "flaky NIC",
        "actor": "admin",
        "changed_at": json.loads(out)["admin"]["changed_at"],
    }
    assert "already" not in cli.fails("host", "disable", "host1", "--reason", "again")
    assert "cannot disable in state 'disabled'" in cli.fails(
        "host", "disable", "host1", "--reason", "again"
    )
    shown = json.loads(cli("host", "show", "host1", "-f", "json").stdout)
    assert shown["admin"]["state"] == "disabled"
    cli("host", "enable", "host1", "--reason", "NIC replaced")
    assert (
        json.loads(cli("host", "show", "host1", "-f", "json").stdout)["admin"]["state"] == "enabled"
    )


def test_reason_validation_is_one_clear_line(cli: Cli, hosts: list[str]) -> None:
    assert "reason must not be empty" in cli.fails("host", "disable", "host1", "--reason", "  ")
    too_long = cli.fails("host", "disable", "host1", "--reason", "x" * 256)
    assert "256 characters long; at most 255" in too_long
    cli.fails("host", "disable", "host1", code=2)  # --reason is required: a usage error
    assert (
        json.loads(cli("host", "show", "host1", "-f", "json").stdout)["admin"]["state"] == "enabled"
    )


def test_unknown_host_and_unreachable_controller(cli: Cli, controller: LiveController) -> None:
    assert "no host named 'ghost' (HTTP 404)" in cli.fails("host", "show", "ghost")
    down = Cli("http://127.0.0.1:9", cli.token)
    assert "cannot reach the controller at http://127.0.0.1:9" in down.fails("host", "list")
