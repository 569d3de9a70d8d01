"""Maintenance drains end to end with the fake driver: a controller over HTTPS and three agents
over mutual TLS as real processes. Fan-out, balance, limits, retry on another destination,
cancel by exit, a source agent that is down, a forced partial drain, and a controller killed at
random points of a drain many times."""

from __future__ import annotations

import itertools
import json
import random
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.agent.config import load_agent_settings
from tests.cli.live import Cli
from tests.functional.cluster import TlsCluster, wait_until

HOSTS = ("host1", "host2", "host3")
ACTIVE = {"queued", "scheduled", "preparing", "running", "postcopy", "switching"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[TlsCluster]:
    running = TlsCluster(tmp_path)
    running.start_controller()
    try:
        for name in HOSTS:
            running.start_agent(running.agent_config(name))
        wait_until(lambda: len(running.api("GET", "/v1/hosts?liveness=up")) == 3, what="hosts")
        running.api("POST", "/v1/flavors", json={"name": "tiny", "vcpus": 1, "ram_mb": 128})
        running.api("POST", "/v1/flavors", json={"name": "big", "vcpus": 1, "ram_mb": 3072})
        running.api("POST", "/v1/networks", json={"name": "default", "cidr": "198.19.0.0/16"})
        yield running
    finally:
        running.stop_all()


def _boot(cluster: TlsCluster, count: int, flavor: str = "tiny", prefix: str = "vm") -> list[str]:
    names = [f"{prefix}{n}" for n in range(count)]
    for name in names:
        cluster.api(
            "POST",
            "/v1/instances",
            json={"name": name, "flavor": flavor, "network": "default", "host": "host1"},
        )
    wait_until(
        lambda: all(cluster.api("GET", f"/v1/instances/{n}")["state"] == "running" for n in names),
        what="instances running",
    )
    return names


def _enter(cluster: TlsCluster, host: str = "host1", **body: Any) -> dict[str, Any]:
    policy = {"migration": {"max_bandwidth_mib": 64}, **body.pop("policy", {})}
    return dict(
        cluster.api(
            "POST",
            f"/v1/hosts/{host}/maintenance/enter",
            json={"reason": "firmware", "policy": policy, **body},
        )
    )


def _status(cluster: TlsCluster, host: str = "host1") -> dict[str, Any]:
    return dict(cluster.api("GET", f"/v1/hosts/{host}/maintenance"))


def _settled(cluster: TlsCluster, host: str = "host1", within: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = _status(cluster, host)
        return None if status["maintenance"]["state"] == "draining" else status

    return dict(wait_until(done, within, "the drain to end"))


def _copies(cluster: TlsCluster, host: str) -> dict[str, str]:
    """Every guest the host's agent holds, whatever its power (incoming targets too)."""
    url = load_agent_settings(cluster.root / f"{host}.toml").agent_url
    tls = cluster.client_tls(cluster.controller_cert)
    response = httpx.get(f"{url}/v1/guests", verify=tls, timeout=30)
    return {g["name"]: g["power"] for g in response.json()}


def _guests(cluster: TlsCluster, host: str) -> list[str]:
    return sorted(name for name, power in _copies(cluster, host).items() if power == "running")


def _claims(cluster: TlsCluster) -> list[tuple[str, str, int]]:
    with sqlite3.connect(cluster.root / "state" / "ferry.db") as db:
        return db.execute(
            "SELECT i.name, h.name, a.migration_id IS NOT NULL FROM allocations a "
            "JOIN hosts h ON h.id = a.host_id JOIN instances i ON i.id = a.instance_id "
            "ORDER BY 1"
        ).fetchall()


def _assert_consistent(cluster: TlsCluster, names: list[str]) -> dict[str, str]:
    """Every instance runs on exactly one host, where its record says, holding one claim."""
    where: dict[str, str] = {}
    for name in names:
        inst = cluster.api("GET", f"/v1/instances/{name}")
        assert inst["state"] == "running", inst
        where[name] = inst["host"]
    running = {host: _guests(cluster, host) for host in HOSTS}
    for name, host in where.items():
        assert [h for h, guests in running.items() if name in guests] == [host], (name, running)
    assert _claims(cluster) == sorted((n, h, 0) for n, h in where.items())
    assert not [m for m in cluster.api("GET", "/v1/migrations") if m["state"] in ACTIVE]
    return where


def test_drain_moves_every_instance_balanced_and_host_stays_out(cluster: TlsCluster) -> None:
    names = _boot(cluster, 6)
    entered = _enter(cluster)
    assert entered["maintenance"]["state"] == "draining"
    status = _settled(cluster)
    assert status["maintenance"]["state"] == "in_maintenance"
    assert status["drain"]["state"] == "completed"
    assert (status["drain"]["instances_moved"], status["instances_remaining"]) == (6, 0)
    where = _assert_consistent(cluster, names)
    assert Counter(where.values()) == {"host2": 3, "host3": 3}
    moves = status["migrations"]
    assert sorted(m["instance"] for m in moves) == names
    assert all(m["state"] == "completed" and m["downtime_ms"] is not None for m in moves)
    assert {m["destination"] for m in moves} == {"host2", "host3"}

    cluster.api(
        "POST", "/v1/instances", json={"name": "new", "flavor": "tiny", "network": "default"}
    )
    assert cluster.api("GET", "/v1/instances/new")["host"] != "host1"
    kinds = [e["kind"] for e in cluster.api("GET", "/v1/events?order=asc&limit=500")["items"]]
    assert kinds.count("migration.queued") == 6 and kinds.count("migration.completed") == 6
    assert kinds.index("drain.completed") > max(
        i for i, k in enumerate(kinds) if k == "migration.completed"
    )
    cluster.api("POST", "/v1/hosts/host1/maintenance/exit", json={"reason": "done"})
    assert _status(cluster)["maintenance"]["state"] == "in_service"


def _intervals(moves: list[dict[str, Any]]) -> list[tuple[datetime, datetime]]:
    return sorted(
        (datetime.fromisoformat(m["started_at"]), datetime.fromisoformat(m["finished_at"]))
        for m in moves
        if m["started_at"]
    )


def test_one_stream_at_a_time_when_the_policy_says_so(cluster: TlsCluster) -> None:
    names = _boot(cluster, 4)
    _enter(cluster, policy={"max_outbound": 1, "prepare_ahead": 1})
    status = _settled(cluster)
    assert status["drain"]["state"] == "completed"
    spans = _intervals(status["migrations"])
    assert len(spans) == 4
    for (_, ended), (started, _) in itertools.pairwise(spans):
        assert started >= ended, spans  # streams never overlap
    _assert_consistent(cluster, names)


def test_a_failed_destination_is_retried_elsewhere(cluster: TlsCluster) -> None:
    names = _boot(cluster, 4)
    host2 = next(p for p in cluster.processes if "host2.toml" in " ".join(p.argv) and p.popen)
    host2.stop(signal.SIGKILL)  # host2 still looks up for a few heartbeats: it gets picked
    _enter(cluster, policy={"retry_backoff_s": 0.5})
    status = _settled(cluster, within=180)
    assert status["drain"]["state"] == "completed", status["drain"]
    retried = [m for m in status["migrations"] if m["attempt"] == 2]
    assert retried, status["migrations"]
    failed_first = {m["instance"] for m in status["migrations"] if m["state"] == "failed"}
    assert failed_first == {m["instance"] for m in retried}
    assert all(m["destination"] == "host3" and m["state"] == "completed" for m in retried)
    for name in names:
        assert cluster.api("GET", f"/v1/instances/{name}")["host"] == "host3"
    assert sorted(_guests(cluster, "host3")) == names


def test_exit_while_draining_cancels_and_everything_stays(cluster: TlsCluster) -> None:
    names = _boot(cluster, 4)
    _enter(cluster, policy={"migration": {"max_bandwidth_mib": 1}, "max_outbound": 2})

    def streaming() -> bool:
        return any(m["state"] == "running" for m in _status(cluster)["migrations"])

    wait_until(streaming, what="a migration streaming")
    out = cluster.api("POST", "/v1/hosts/host1/maintenance/exit", json={"reason": "called off"})
    assert out["maintenance"]["state"] == "in_service" and out["drain"]["state"] == "cancelled"

    def all_ended() -> bool:
        return all(m["state"] not in ACTIVE for m in _status(cluster)["migrations"])

    wait_until(all_ended, what="migrations to end")
    moves = _status(cluster)["migrations"]
    assert {m["state"] for m in moves} == {"cancelled"}
    assert _assert_consistent(cluster, names) == dict.fromkeys(names, "host1")


def test_a_host_whose_agent_is_down_fails_its_drain_clearly(cluster: TlsCluster) -> None:
    _boot(cluster, 2)
    host1 = next(p for p in cluster.processes if "host1.toml" in " ".join(p.argv) and p.popen)
    host1.stop(signal.SIGKILL)
    wait_until(lambda: cluster.api("GET", "/v1/hosts/host1")["liveness"] == "down", what="down")
    _enter(cluster)
    status = _settled(cluster)
    assert status["maintenance"]["state"] == "drain_failed"
    assert status["drain"]["error"] == "the agent of host1 is down: its instances cannot be moved"
    assert {m["state"] for m in status["migrations"]} == {"cancelled"}


def test_forced_partial_drain_moves_what_fits_and_names_the_rest(cluster: TlsCluster) -> None:
    names = _boot(cluster, 2)
    big = _boot(cluster, 1, flavor="big", prefix="huge")
    cluster.api("POST", "/v1/hosts/host3/disable", json={"reason": "bad fan"})
    host2 = cluster.api("GET", "/v1/hosts/host2")
    assert host2["inventory"]["ram_mb"] == 4096
    cluster.api(  # host2 is left with less room than the big instance needs
        "POST",
        "/v1/instances",
        json={"name": "resident", "flavor": "big", "network": "default", "host": "host2"},
    )
    _enter(cluster, force=True, policy={"retry_backoff_s": 0.2, "max_attempts": 2})
    status = _settled(cluster)
    assert status["maintenance"]["state"] == "drain_failed"
    assert status["drain"]["error"].startswith("1 instance(s) could not be moved (huge0: ")
    assert "not enough free RAM" in status["drain"]["error"]
    for name in names:
        assert cluster.api("GET", f"/v1/instances/{name}")["host"] == "host2"
    assert cluster.api("GET", f"/v1/instances/{big[0]}")["host"] == "host1"
    assert status["drain"]["instances_failed"] == 1 and status["drain"]["instances_moved"] == 2

    # the operator frees room and retries: a new round gives huge0 fresh attempts
    cluster.api("DELETE", "/v1/instances/resident")
    wait_until(lambda: cluster.api("GET", "/v1/hosts/host2")["instances"] == 2, what="room")
    retried = cluster.api("POST", "/v1/hosts/host1/maintenance/retry")
    assert retried["maintenance"]["state"] == "draining" and retried["drain"]["error"] is None
    status = _settled(cluster)
    assert status["maintenance"]["state"] == "in_maintenance", status["drain"]
    assert (status["drain"]["instances_moved"], status["drain"]["instances_failed"]) == (3, 0)
    attempts = [m["attempt"] for m in status["migrations"] if m["instance"] == "huge0"]
    assert attempts == [1, 2, 3]
    assert cluster.api("GET", f"/v1/instances/{big[0]}")["host"] == "host2"


def test_controller_killed_at_random_points_of_drains(cluster: TlsCluster) -> None:
    """Drains back and forth between host1 and the others, the controller SIGKILLed at random
    moments and restarted each time: every drain ends, every instance runs on exactly one host
    with one claim, no migration is left active."""
    names = _boot(cluster, 4)
    rng = random.Random(7)
    kills = 0
    for round_ in range(3):
        source = "host1" if round_ % 2 == 0 else "host2"
        # agents re-announce themselves after the restarts: wait until all three are up again
        wait_until(lambda: len(cluster.api("GET", "/v1/hosts?liveness=up")) == 3, what="hosts")
        _enter(cluster, source, policy={"migration": {"max_bandwidth_mib": 32}})
        deadline = time.monotonic() + 120
        while _status(cluster, source)["maintenance"]["state"] == "draining":
            assert time.monotonic() < deadline, "drain did not end"
            time.sleep(rng.uniform(0.1, 1.5))
            controller = next(p for p in cluster.processes if "controller" in p.argv and p.popen)
            controller.stop(signal.SIGKILL)
            kills += 1
            cluster.processes.remove(controller)
            cluster.start_controller()
        status = _status(cluster, source)
        assert status["maintenance"]["state"] == "in_maintenance", status["drain"]
        _assert_consistent(cluster, names)
        cluster.api("POST", f"/v1/hosts/{source}/maintenance/exit", json={"reason": "next"})
    assert kills >= 3


def test_enter_wait_shows_progress_per_instance_and_a_summary(cluster: TlsCluster) -> None:
    _boot(cluster, 3)
    cli = Cli(cluster.url, cluster.admin, {"FERRY_CA": str(cluster.pki / "ca-cert.pem")})
    out = cli(
        *("host", "maintenance", "enter", "host1", "-r", "kernel", "--wait"),
        *("--policy", "migration.max_bandwidth_mib=32", "--policy", "max_outbound=1"),
    ).stdout
    lines = out.splitlines()
    assert lines[0] == "drain of host1: 0/3 moved, 3 left"
    assert "drain of host1: 3/3 moved, 0 left" in lines
    for n in range(3):
        progress = [line for line in lines if line.startswith(f"vm{n} -> host")]
        assert any(": running" in line or ": queued" in line for line in progress), progress
        assert progress[-1].endswith("completed") or ": completed" in progress[-1], progress
    summary = [line.split() for line in lines if line.startswith("vm")][-3:]
    assert [row[0] for row in summary] == ["vm0", "vm1", "vm2"]
    assert all(row[2] == "completed" and row[5] == "ms" for row in summary), summary
    assert "3 of 3 instance(s) moved in" in out
    status = json.loads(cli("host", "maintenance", "status", "host1", "-f", "json").stdout)
    assert status["maintenance"]["state"] == "in_maintenance"


def test_an_instance_that_does_not_run_moves_cold(cluster: TlsCluster) -> None:
    names = _boot(cluster, 2)
    crashed = cluster.api("GET", "/v1/instances/vm1")
    url = load_agent_settings(cluster.root / "host1.toml").agent_url
    tls = cluster.client_tls(cluster.controller_cert)
    gone = httpx.delete(f"{url}/v1/guests/{crashed['id']}", verify=tls, timeout=30)
    assert gone.status_code == 204  # its QEMU is gone: the controller marks it `error`
    wait_until(
        lambda: cluster.api("GET", "/v1/instances/vm1")["state"] == "error", what="vm1 in error"
    )
    _enter(cluster)
    status = _settled(cluster)
    assert status["maintenance"]["state"] == "in_maintenance", status["drain"]
    kinds = {m["instance"]: m["kind"] for m in status["migrations"]}
    assert kinds == {"vm0": "live", "vm1": "cold"}
    cold = cluster.api("GET", "/v1/instances/vm1")
    assert cold["state"] == "error" and cold["host"] in ("host2", "host3")
    assert dict((n, h) for n, h, _ in _claims(cluster))["vm1"] == cold["host"]
    assert len([c for c in _claims(cluster) if c[0] in names]) == 2  # one claim each


def test_an_abort_of_a_prepared_migration_releases_its_destination(cluster: TlsCluster) -> None:
    """A drain migration prepared ahead (its destination listening, waiting for the source's one
    stream) is aborted: it ends cancelled before any byte moved, the destination's incoming copy
    is removed and its claim released, and the instance runs on where it was."""
    _boot(cluster, 2)
    slow = {"max_outbound": 1, "prepare_ahead": 1, "retry_backoff_s": 60}
    _enter(cluster, policy={**slow, "migration": {"max_bandwidth_mib": 1}})

    def prepared() -> dict[str, Any] | None:
        by_state = {m["state"]: m for m in cluster.api("GET", "/v1/migrations")}
        return by_state.get("preparing") if "running" in by_state else None

    waiting = wait_until(prepared, what="one migration streaming, one prepared ahead")
    dest, name = waiting["destination"], waiting["instance"]
    assert _copies(cluster, dest).get(name) == "incoming"
    cluster.api("POST", f"/v1/migrations/{waiting['id']}/abort")
    done = wait_until(
        lambda: (
            (m := cluster.api("GET", f"/v1/migrations/{waiting['id']}"))["state"] not in ACTIVE
            and m
        ),
        what="the abort",
    )
    assert done["state"] == "cancelled" and not done["bytes_sent"], done
    assert name not in _copies(cluster, dest)
    assert [(n, h) for n, h, _ in _claims(cluster) if n == name] == [(name, "host1")]
    assert cluster.api("GET", f"/v1/instances/{name}")["host"] == "host1"
    assert name in _guests(cluster, "host1")
