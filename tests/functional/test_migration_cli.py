"""`ferry instance migrate` and `ferry migration list|show|abort`, the installed script against a
controller over HTTPS with two fake-driver agents (mutual TLS)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.live import FERRY, Cli, json_of
from tests.functional.cluster import TlsCluster, wait_until


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[TlsCluster]:
    running = TlsCluster(tmp_path)
    running.start_controller()
    try:
        for name in ("host1", "host2"):
            running.start_agent(running.agent_config(name))
        wait_until(lambda: len(running.api("GET", "/v1/hosts?liveness=up")) == 2, what="hosts")
        running.api("POST", "/v1/flavors", json={"name": "small", "vcpus": 1, "ram_mb": 512})
        running.api("POST", "/v1/networks", json={"name": "default", "cidr": "198.19.0.0/16"})
        body = {"name": "vm1", "flavor": "small", "network": "default", "host": "host1"}
        running.api("POST", "/v1/instances", json=body)
        wait_until(
            lambda: running.api("GET", "/v1/instances/vm1")["state"] == "running", what="vm1"
        )
        yield running
    finally:
        running.stop_all()


@pytest.fixture
def cli(cluster: TlsCluster) -> Cli:
    return Cli(cluster.url, cluster.admin, {"FERRY_CA": str(cluster.pki / "ca-cert.pem")})


def test_migrate_wait_reports_progress_then_the_summary(cli: Cli) -> None:
    out = cli("instance", "migrate", "vm1", "--wait", "--policy", "max_bandwidth_mib=200").stdout
    progress = [line for line in out.splitlines() if line.startswith("vm1 host1 -> host2: ")]
    assert progress, out  # one line a second when not on a terminal
    assert any("/512 MiB running pass" in line for line in progress), progress
    summary = dict(line.split(None, 1) for line in out.splitlines()[len(progress) :] if line)
    assert summary["instance"] == "vm1: host1 -> host2"
    assert summary["state"] == "completed"
    assert summary["memory"].startswith("512 of 512 MiB sent")
    assert json_of(cli, "instance", "show", "vm1")["host"] == "host2"

    listed = json_of(cli, "migration", "list", "--instance", "vm1")
    assert [(m["source"], m["destination"], m["state"]) for m in listed] == [
        ("host1", "host2", "completed")
    ]
    assert listed[0]["policy"]["max_bandwidth_mib"] == 200
    shown = json_of(cli, "migration", "show", listed[0]["id"][:6])
    assert shown["id"] == listed[0]["id"] and shown["downtime_ms"] is not None
    table = cli("migration", "list", "--state", "completed").stdout.splitlines()
    assert table[0].split()[:5] == ["ID", "INSTANCE", "FROM", "TO", "STATE"]
    assert table[1].split()[:5] == [listed[0]["id"][:8], "vm1", "host1", "host2", "completed"]
    assert json_of(cli, "migration", "list", "--state", "failed") == []
    # --host matches either end of a migration
    for end in ("host1", "host2"):
        assert [m["id"] for m in json_of(cli, "migration", "list", "--host", end)] == [shown["id"]]
    unknown = cli("migration", "list", "--host", "host3", ok=False)
    assert unknown.returncode == 1 and "no host named 'host3'" in unknown.stderr
    # the summary shows QEMU's own measure of the stream
    assert "to switchover (QEMU)" in cli("migration", "show", shown["id"]).stdout


def test_abort_ends_a_waiting_migrate_with_an_error(cli: Cli) -> None:
    waiting = subprocess.Popen(
        [FERRY, "instance", "migrate", "vm1", "--wait", "--policy", "max_bandwidth_mib=1"],
        env=cli.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        running = wait_until(
            lambda: json_of(cli, "migration", "list", "--state", "running"), what="running"
        )
        out = cli("migration", "abort", running[0]["id"][:8]).stdout
        assert out.startswith(f"migration {running[0]['id'][:8]} of vm1:")
        assert "(abort requested)" in out or "cancelled" in out, out  # pending, or done already
        _, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 1
    assert err.strip() == "error: migration of vm1 cancelled: aborted on request"
    assert json_of(cli, "instance", "show", "vm1")["host"] == "host1"
    again = cli.fails("migration", "abort", running[0]["id"][:8])
    assert "HTTP 409" in again and "cancelled" in again


BAD_INPUT = [
    (("instance", "migrate", "nope"), "no instance named 'nope' (HTTP 404)"),
    (("instance", "migrate", "vm1", "--host", "host1"), "HTTP 409"),
    (("instance", "migrate", "vm1", "--host", "host9"), "host9"),
    (("instance", "migrate", "vm1", "--policy", "speed=9"), "unknown policy settings: speed"),
    (("instance", "migrate", "vm1", "--policy", "max_bandwidth_mib=0"), "max_bandwidth_mib"),
    (("instance", "migrate", "vm1", "--policy", "nokey"), "key=value"),
    (("instance", "migrate", "vm1", "--policy", "on_timeout=later"), "abort or postcopy"),
    (("migration", "show", "ffff"), "no migration matches 'ffff'"),
    (("migration", "abort", "ffff"), "no migration matches 'ffff'"),
]


def test_bad_input_is_one_line_and_changes_nothing(cli: Cli) -> None:
    for args, message in BAD_INPUT:
        error = cli.fails(*args)
        assert error.startswith("error: ") and message in error, (args, error)
    assert json_of(cli, "migration", "list") == []
    assert json_of(cli, "instance", "show", "vm1")["host"] == "host1"
