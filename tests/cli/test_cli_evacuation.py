"""`ferry host maintenance enter --dry-run` shows the evacuation plan and loads; entering is
refused with reasons when the cluster cannot take every instance, unless forced."""

from __future__ import annotations

import json

import pytest

from tests.cli.live import Cli, LiveController

HEARTBEAT_INTERVAL = 120  # hosts registered once stay up: nothing heartbeats for them here


@pytest.fixture
def cli(controller: LiveController) -> Cli:
    controller.register(controller.token("agent", "agent"), "host1", "host2", "host3")
    cli = Cli(controller.url, controller.admin_token)
    cli("flavor", "create", "m4", "--vcpus", "2", "--ram-mb", "4096", "--disk-gb", "10")
    cli("network", "create", "default", "--cidr", "198.19.0.0/24")
    return cli


def _boot(cli: Cli, count: int, host: str = "host1") -> None:
    for n in range(count):
        cli("instance", "create", f"vm{n}", "--flavor", "m4", "--host", host)


def test_dry_run_shows_destinations_and_loads(cli: Cli) -> None:
    _boot(cli, 4)
    out = cli("host", "maintenance", "enter", "host1", "-r", "BIOS", "--dry-run").stdout
    assert "pre-check passed: every instance has a destination on 2 host(s)" in out
    rows = [line.split() for line in out.splitlines()]
    destinations = [r[-1] for r in rows if r and r[0].startswith("vm")]
    assert sorted(destinations) == ["host2", "host2", "host3", "host3"]
    loads = [line for line in out.splitlines() if line.startswith(("host2", "host3"))]
    assert len(loads) == 2
    assert all(
        "0% (0/32 vCPU, 0/16 GiB)" in line and "50% (4/32 vCPU, 8/16 GiB)" in line for line in loads
    )
    plan = json.loads(
        cli("host", "maintenance", "enter", "host1", "-r", "BIOS", "--dry-run", "-f", "json").stdout
    )["plan"]
    assert plan["complete"] and len(plan["placements"]) == 4


def test_refused_without_room_then_forced(cli: Cli) -> None:
    _boot(cli, 4)
    cli("instance", "create", "resident", "--flavor", "m4", "--host", "host2")
    cli("host", "disable", "host3", "--reason", "fan failure")
    preview = cli("host", "maintenance", "enter", "host1", "-r", "BIOS", "--dry-run").stdout
    assert "pre-check failed: 1 instance(s) have no destination" in preview
    assert "no valid host among 2 (host disabled: 1, not enough free RAM: 1)" in preview

    refused = cli.fails("host", "maintenance", "enter", "host1", "-r", "BIOS")
    assert refused.startswith("error: cannot drain host1: 1 of 4 instance(s) have no destination")
    assert "HTTP 409" in refused
    state = json.loads(cli("host", "maintenance", "status", "host1", "-f", "json").stdout)
    assert state["maintenance"]["state"] == "in_service"

    forced = json.loads(
        cli("host", "maintenance", "enter", "host1", "-r", "BIOS", "--force", "-f", "json").stdout
    )
    assert forced["maintenance"]["state"] == "draining" and forced["drain"]["force"] is True
    assert sum(1 for e in forced["drain"]["plan"] if e["destination"] is None) == 1
