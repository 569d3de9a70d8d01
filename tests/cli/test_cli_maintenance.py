"""`ferry host maintenance ...` end to end, and persistence across controller restarts."""

from __future__ import annotations

import json
import signal

from tests.cli.live import Cli, LiveController


def _state(cli: Cli, host: str) -> str:
    status = json.loads(cli("host", "maintenance", "status", host, "-f", "json").stdout)
    return str(status["maintenance"]["state"])


def test_dry_run_changes_nothing(cli: Cli, hosts: list[str]) -> None:
    out = cli("host", "maintenance", "enter", "host1", "--reason", "BIOS", "--dry-run").stdout
    assert "in_service -> draining" in out and "nothing was changed" in out
    assert _state(cli, "host1") == "in_service"


def test_enter_wait_exit_and_refusals(cli: Cli, hosts: list[str]) -> None:
    out = cli(
        "host", "maintenance", "enter", "host1", "--reason", "BIOS update", "--wait", "-f", "json"
    ).stdout
    status = json.loads(out)
    assert status["maintenance"]["state"] == "in_maintenance"
    assert status["maintenance"]["reason"] == "BIOS update"
    assert status["maintenance"]["schedulable"] is False
    assert status["drain"]["state"] == "completed"

    refused = cli.fails("host", "maintenance", "enter", "host1", "--reason", "twice")
    assert "cannot enter maintenance in state 'in_maintenance'" in refused
    assert "HTTP 409" in refused

    cli("host", "maintenance", "exit", "host1", "--reason", "done")
    assert _state(cli, "host1") == "in_service"
    assert "cannot exit maintenance in state 'in_service'" in cli.fails(
        "host", "maintenance", "exit", "host1"
    )


def test_maintenance_survives_sigkill_restart_and_host_reboot(
    controller: LiveController, cli: Cli, hosts: list[str]
) -> None:
    cli("host", "maintenance", "enter", "host3", "--reason", "PSU swap", "--wait")
    token_before = controller.admin_token

    assert controller.stop(signal.SIGKILL) == -signal.SIGKILL
    controller.start()

    assert controller.admin_token == token_before  # no second bootstrap
    status = json.loads(cli("host", "maintenance", "status", "host3", "-f", "json").stdout)
    assert status["maintenance"]["state"] == "in_maintenance"
    assert status["maintenance"]["reason"] == "PSU swap"
    assert status["maintenance"]["actor"] == "admin"

    # The host reboots: its agent registers it again. The operator's mark stays.
    controller.register(controller.token("agent-after-restart", "agent"), "host1", "host2", "host3")
    assert _state(cli, "host3") == "in_maintenance"
    # uvicorn shuts down gracefully, then re-raises SIGTERM: the conventional exit of a service.
    assert controller.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    controller.start()
    assert _state(cli, "host3") == "in_maintenance"
