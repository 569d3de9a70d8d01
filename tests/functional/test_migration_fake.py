"""Live-migration workflow through real processes (controller over HTTPS, two agents with the
fake driver, mutual TLS), with the fake's pre-copy model standing in for QEMU.

Crash tests stop processes at chosen points and, where the controller died after an agent call,
make that call themselves over the agents' API, exactly as the controller does."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.agent.config import load_agent_settings
from ferry.domain.convergence import ConvergencePolicy
from tests.functional.cluster import Process, TlsCluster, wait_until

ACTIVE = {"queued", "scheduled", "preparing", "running", "postcopy", "switching"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[TlsCluster]:
    running = TlsCluster(tmp_path)
    running.start_controller()
    try:
        for name in ("host1", "host2"):
            running.start_agent(running.agent_config(name))
        wait_until(lambda: len(running.api("GET", "/v1/hosts?liveness=up")) == 2, what="hosts")
        running.api("POST", "/v1/flavors", json={"name": "small", "vcpus": 1, "ram_mb": 512})
        running.api("POST", "/v1/flavors", json={"name": "tiny", "vcpus": 1, "ram_mb": 128})
        running.api("POST", "/v1/networks", json={"name": "default", "cidr": "198.19.0.0/16"})
        yield running
    finally:
        running.stop_all()


def _boot(cluster: TlsCluster, name: str, dirty: int = 0, flavor: str = "small") -> dict[str, Any]:
    cluster.api(
        "POST",
        "/v1/instances",
        json={
            "name": name,
            "flavor": flavor,
            "network": "default",
            "host": "host1",
            "dirty_rate_mbps": dirty,
        },
    )
    return dict(wait_until(lambda: _running(cluster, name), what=f"{name} running"))


def _running(cluster: TlsCluster, name: str) -> dict[str, Any] | None:
    inst: dict[str, Any] = cluster.api("GET", f"/v1/instances/{name}")
    return inst if inst["state"] == "running" else None


def _finished(cluster: TlsCluster, migration_id: str) -> dict[str, Any] | None:
    m: dict[str, Any] = cluster.api("GET", f"/v1/migrations/{migration_id}")
    return None if m["state"] in ACTIVE else m


def _guests(cluster: TlsCluster, host: str) -> list[str]:
    return [g["name"] for g in _agent(cluster, host, "GET", "/v1/guests").json()]


def _agent(cluster: TlsCluster, host: str, method: str, path: str) -> httpx.Response:
    """Call a host's agent with the controller's certificate, as the controller does (also
    while the controller is down: the address comes from the agent's configuration)."""
    url = load_agent_settings(cluster.root / f"{host}.toml").agent_url
    tls = cluster.client_tls(cluster.controller_cert)
    response = httpx.request(method, f"{url}{path}", verify=tls, timeout=30)
    assert response.is_success, (response.status_code, response.text)
    return response


def _agent_process(cluster: TlsCluster, host: str) -> Process:
    config = str(cluster.root / f"{host}.toml")
    return next(p for p in cluster.processes if config in p.argv and p.popen is not None)


def _restart_agent(cluster: TlsCluster, host: str) -> None:
    cluster.start_agent(cluster.root / f"{host}.toml")
    wait_until(lambda: _reachable(cluster, host), what=f"{host} agent back")


def _reachable(cluster: TlsCluster, host: str) -> bool:
    try:
        _guests(cluster, host)
    except httpx.TransportError:
        return False
    return True


def _migration(cluster: TlsCluster, migration_id: str) -> dict[str, Any]:
    return dict(cluster.api("GET", f"/v1/migrations/{migration_id}"))


def _migrate(cluster: TlsCluster, name: str, **policy: Any) -> dict[str, Any]:
    m = dict(cluster.api("POST", f"/v1/instances/{name}/migrate", json={"policy": policy}))
    wait_until(lambda: (_migration(cluster, m["id"])["bytes_sent"] or 0) > 0, what="bytes moving")
    return m


def _kill_controller(cluster: TlsCluster) -> None:
    next(p for p in cluster.processes if "controller" in p.argv and p.popen).stop(signal.SIGKILL)


def _stream_ended(cluster: TlsCluster, host: str, instance_id: str) -> None:
    """Wait until the source reports its stream completed (the guest paused there)."""
    path = f"/v1/guests/{instance_id}/migration"
    wait_until(
        lambda: _agent(cluster, host, "GET", path).json()["status"] == "completed",
        what="stream completed",
    )


def _allocations(cluster: TlsCluster) -> dict[str, int]:
    """Claims per host, straight from the controller's database; in-flight ones tagged `+`."""
    with sqlite3.connect(cluster.root / "state" / "ferry.db") as db:
        rows = db.execute(
            "SELECT h.name || CASE WHEN a.migration_id IS NULL THEN '' ELSE '+' END, count(*) "
            "FROM allocations a JOIN hosts h ON h.id = a.host_id GROUP BY 1"
        ).fetchall()
    return dict(rows)


def _kinds(cluster: TlsCluster) -> list[str]:
    events = cluster.api("GET", "/v1/events?kind=migration&order=asc&limit=100")["items"]
    return [e["kind"] for e in events]


def _assert_runs_only_on(cluster: TlsCluster, name: str, host: str) -> None:
    """The instance runs in exactly one place, and its record and claims say so."""
    instance = cluster.api("GET", f"/v1/instances/{name}")
    assert (instance["host"], instance["state"]) == (host, "running"), instance
    other = "host1" if host == "host2" else "host2"
    assert _guests(cluster, host) == [name] and _guests(cluster, other) == []
    counts = {h["name"]: h["instances"] for h in cluster.api("GET", "/v1/hosts")}
    assert counts == {host: 1, other: 0}
    assert _allocations(cluster) == {host: 1}


def test_migration_completes_and_moves_everything(cluster: TlsCluster) -> None:
    _boot(cluster, "vm1")
    m = cluster.api("POST", "/v1/instances/vm1/migrate", json={})
    assert (m["source"], m["destination"], m["state"]) == ("host1", "host2", "scheduled")
    done = wait_until(lambda: _finished(cluster, m["id"]), what="migration end")
    assert done["state"] == "completed", done
    assert done["bytes_total"] == 512 * 2**20 and done["bytes_sent"] >= done["bytes_total"]
    assert done["downtime_ms"] is not None and done["finished_at"] is not None
    assert 0 < done["total_time_ms"] < 60_000  # the source's own measure, stored
    assert done["error"] is None and done["leftover"] is None
    _assert_runs_only_on(cluster, "vm1", "host2")
    assert _kinds(cluster) == [
        "migration.scheduled",
        "migration.preparing",
        "migration.running",
        "migration.completed",
    ]
    # The source agent announced the stream and its end; the controller read it at once.
    metrics = cluster.api("GET", "/v1/metrics")
    assert metrics["migration_events_accepted"] >= 2, metrics
    assert metrics["migration_event_readings"] >= 1, metrics


def test_abort_mid_flight_keeps_instance_on_source(cluster: TlsCluster) -> None:
    _boot(cluster, "vm1")
    m = cluster.api(
        "POST", "/v1/instances/vm1/migrate", json={"policy": {"max_bandwidth_mib": 1}}
    )  # 512 s to copy: it lasts
    wait_until(
        lambda: cluster.api("GET", f"/v1/migrations/{m['id']}")["state"] == "running",
        what="running",
    )
    # In flight, both ends hold a claim: the destination's is tagged with the migration.
    assert _allocations(cluster) == {"host1": 1, "host2+": 1}
    # Progress is stored as it goes (the loop reads the source at least every second).
    first = _migration(cluster, m["id"])
    second = wait_until(
        lambda: (n := _migration(cluster, m["id"]))["bytes_sent"] > first["bytes_sent"] and n,
        what="progress",
        timeout=5,
    )
    assert second["bytes_total"] == 512 * 2**20 and second["bytes_remaining"] > 0
    assert 0 < second["throughput_mbps"] <= 1.1 * 8 * 1.048576  # 1 MiB/s, in Mbit/s
    assert second["progress_at"] > first["progress_at"]
    cluster.api("POST", f"/v1/migrations/{m['id']}/abort")
    done = wait_until(lambda: _finished(cluster, m["id"]), what="abort")
    assert done["state"] == "cancelled" and done["error"] == "aborted on request"
    assert done["leftover"] is None
    _assert_runs_only_on(cluster, "vm1", "host1")


def test_non_converging_guest_ends_by_the_timeout_action(cluster: TlsCluster) -> None:
    _boot(cluster, "busy", dirty=200, flavor="tiny")  # 1.28 s a pass at 100 MiB/s
    policy = {
        "max_bandwidth_mib": 100,
        "auto_converge": False,
        "min_timeout_s": 3,
        "timeout_s_per_gib": 1,
        "downtime_ladder_ms": [300],
    }
    m = cluster.api("POST", "/v1/instances/busy/migrate", json={"policy": policy})
    done = wait_until(lambda: _finished(cluster, m["id"]), what="timeout", timeout=60)
    assert done["state"] == "failed" and "did not complete within 3s" in done["error"]
    assert done["passes"] >= 2
    assert cluster.api("GET", "/v1/instances/busy")["host"] == "host1"

    rescue = dict(policy, postcopy=True, on_timeout="postcopy")
    m = cluster.api("POST", "/v1/instances/busy/migrate", json={"policy": rescue})
    done = wait_until(lambda: _finished(cluster, m["id"]), what="post-copy", timeout=60)
    assert done["state"] == "completed", done
    assert cluster.api("GET", "/v1/instances/busy")["host"] == "host2"


def test_escalation_ladder_and_auto_converge(cluster: TlsCluster) -> None:
    _boot(cluster, "warm", dirty=90, flavor="tiny")
    m = cluster.api(
        "POST",
        "/v1/instances/warm/migrate",
        json={"policy": {"max_bandwidth_mib": 100, "stall_passes": 1}},
    )
    done = wait_until(lambda: _finished(cluster, m["id"]), what="convergence", timeout=90)
    assert done["state"] == "completed", done
    events = cluster.api("GET", "/v1/events?kind=migration.escalated&order=asc")["items"]
    assert events, "a stalled migration climbs the downtime ladder"
    assert done["downtime_limit_ms"] > ConvergencePolicy().downtime_ladder_ms[0]  # it climbed


def test_refusals_are_clear(cluster: TlsCluster) -> None:
    _boot(cluster, "vm1")
    response = httpx.post(
        f"{cluster.url}/v1/instances/vm1/migrate",
        json={"host": "host1"},
        verify=cluster.client_tls(),
        headers={"Authorization": f"Bearer {cluster.admin}"},
    )
    assert response.status_code == 409 and "already runs on host1" in response.json()["message"]
    response = httpx.post(
        f"{cluster.url}/v1/instances/vm1/migrate",
        json={"policy": {"warp": 9}},
        verify=cluster.client_tls(),
        headers={"Authorization": f"Bearer {cluster.admin}"},
    )
    assert response.status_code == 422 and "unknown policy settings: warp" in response.text


def test_controller_sigkilled_mid_migration_finishes_consistently(cluster: TlsCluster) -> None:
    _boot(cluster, "vm1")
    m = cluster.api(
        "POST", "/v1/instances/vm1/migrate", json={"policy": {"max_bandwidth_mib": 64}}
    )  # 512 MiB: about 8 s
    wait_until(
        lambda: (cluster.api("GET", f"/v1/migrations/{m['id']}")["bytes_sent"] or 0) > 0,
        what="bytes moving",
    )
    controller = cluster.processes[0]
    controller.stop(signal.SIGKILL)
    cluster.start_controller()
    done = wait_until(lambda: _finished(cluster, m["id"]), what="migration end", timeout=60)
    assert done["state"] == "completed", done
    _assert_runs_only_on(cluster, "vm1", "host2")


# -- crash safety: both ends are asked where the instance runs ------------------------------


def test_controller_killed_after_both_ends_finished_completes_the_move(
    cluster: TlsCluster,
) -> None:
    """The controller died after finish-destination and finish-source but before its record:
    the source no longer has the guest, the destination runs it as its own."""
    vm = _boot(cluster, "vm1", flavor="tiny")
    m = _migrate(cluster, "vm1", max_bandwidth_mib=32)  # 128 MiB: about 4 s
    _kill_controller(cluster)
    _stream_ended(cluster, "host1", vm["id"])
    _agent(cluster, "host2", "POST", f"/v1/guests/{vm['id']}/migration/finish-destination")
    _agent(cluster, "host1", "POST", f"/v1/guests/{vm['id']}/migration/finish-source")
    cluster.start_controller()
    done = wait_until(lambda: _finished(cluster, m["id"]), what="migration end")
    assert (done["state"], done["error"], done["leftover"]) == ("completed", None, None), done
    # The source's heartbeat (no guest there any more) did not fail the moving instance.
    _assert_runs_only_on(cluster, "vm1", "host2")
    assert "instance.error" not in [
        e["kind"] for e in cluster.api("GET", "/v1/events?kind=instance")["items"]
    ]


def test_source_gone_and_destination_away_waits_without_failing_the_instance(
    cluster: TlsCluster,
) -> None:
    """As above, and the destination's agent is away when the controller returns: the source
    has no copy, the destination cannot say, so the migration waits (not "lost"); meanwhile the
    source's heartbeats, which no longer list the guest, leave the moving instance alone."""
    vm = _boot(cluster, "vm1", flavor="tiny")
    m = _migrate(cluster, "vm1", max_bandwidth_mib=32)
    _kill_controller(cluster)
    _stream_ended(cluster, "host1", vm["id"])
    _agent(cluster, "host2", "POST", f"/v1/guests/{vm['id']}/migration/finish-destination")
    _agent(cluster, "host1", "POST", f"/v1/guests/{vm['id']}/migration/finish-source")
    _agent_process(cluster, "host2").stop(signal.SIGKILL)
    cluster.start_controller()
    waiting = wait_until(
        lambda: (m2 := _migration(cluster, m["id"]))["error"] and m2, what="a visible reason"
    )
    assert waiting["state"] == "running"
    assert "cannot tell where it runs (host1 has no copy; host2 did not answer" in waiting["error"]
    time.sleep(2.5)  # heartbeats from host1 (every second) arrive while it waits
    assert cluster.api("GET", "/v1/instances/vm1")["state"] == "running"

    _restart_agent(cluster, "host2")
    done = wait_until(lambda: _finished(cluster, m["id"]), what="migration end")
    assert (done["state"], done["error"], done["leftover"]) == ("completed", None, None), done
    _assert_runs_only_on(cluster, "vm1", "host2")


def test_source_agent_down_at_switchover_completes_then_cleans_up(cluster: TlsCluster) -> None:
    """The destination runs the guest but the source agent is gone: the move is committed with
    the source's paused copy as a leftover, removed once that agent is back."""
    vm = _boot(cluster, "vm1", flavor="tiny")
    m = _migrate(cluster, "vm1", max_bandwidth_mib=32)
    _kill_controller(cluster)
    _stream_ended(cluster, "host1", vm["id"])
    _agent(cluster, "host2", "POST", f"/v1/guests/{vm['id']}/migration/finish-destination")
    _agent_process(cluster, "host1").stop(signal.SIGKILL)
    cluster.start_controller()

    done = wait_until(lambda: _finished(cluster, m["id"]), what="migration end")
    assert (done["state"], done["leftover"]) == ("completed", "source"), done
    assert done["error"].startswith("host1 still holds a copy of vm1; removing it when it")
    instance = cluster.api("GET", "/v1/instances/vm1")
    assert (instance["host"], instance["state"]) == ("host2", "running")
    assert _guests(cluster, "host2") == ["vm1"]
    assert _allocations(cluster) == {"host2": 1}
    assert _kinds(cluster)[-2:] == ["migration.completed", "migration.leftover"]

    _restart_agent(cluster, "host1")
    cleaned = wait_until(
        lambda: (m2 := _migration(cluster, m["id"]))["leftover"] is None and m2,
        what="leftover removed",
    )
    assert (cleaned["state"], cleaned["error"]) == ("completed", None)
    _assert_runs_only_on(cluster, "vm1", "host2")
    assert _kinds(cluster)[-3:] == [
        "migration.completed",
        "migration.leftover",
        "migration.cleaned",
    ]


def test_source_agent_down_mid_stream_waits_visibly_then_finishes(cluster: TlsCluster) -> None:
    """QEMU keeps streaming while its agent is away; the controller cannot see the stream, says
    so once, and carries on when the agent answers again."""
    _boot(cluster, "vm1", flavor="tiny")
    m = _migrate(cluster, "vm1", max_bandwidth_mib=16)  # 128 MiB: about 8 s
    _agent_process(cluster, "host1").stop(signal.SIGKILL)
    waiting = wait_until(
        lambda: (m2 := _migration(cluster, m["id"]))["error"] and m2, what="a visible reason"
    )
    assert waiting["state"] == "running"
    assert "cannot tell where it runs (host1 did not answer" in waiting["error"]
    assert "host2 has it incoming" in waiting["error"]
    time.sleep(1.5)  # several passes: the reason is recorded once, not every pass
    assert _kinds(cluster).count("migration.waiting") == 1
    assert _migration(cluster, m["id"])["state"] == "running"

    _restart_agent(cluster, "host1")
    done = wait_until(lambda: _finished(cluster, m["id"]), what="migration end", timeout=60)
    assert (done["state"], done["error"], done["leftover"]) == ("completed", None, None), done
    _assert_runs_only_on(cluster, "vm1", "host2")


def test_destination_agent_down_at_switchover_waits_then_finishes(cluster: TlsCluster) -> None:
    """The source handed over; the destination's agent is away: the source holds no running
    copy, so nothing is failed: the migration waits, visibly, for the destination."""
    _boot(cluster, "vm1", flavor="tiny")
    m = _migrate(cluster, "vm1", max_bandwidth_mib=32)
    _agent_process(cluster, "host2").stop(signal.SIGKILL)
    waiting = wait_until(
        lambda: (m2 := _migration(cluster, m["id"]))["error"] and m2, what="a visible reason"
    )
    assert waiting["state"] == "switching"
    assert "host1 has it paused; host2 did not answer" in waiting["error"]
    assert cluster.api("GET", "/v1/instances/vm1")["host"] == "host1"

    _restart_agent(cluster, "host2")
    done = wait_until(lambda: _finished(cluster, m["id"]), what="migration end")
    assert (done["state"], done["error"], done["leftover"]) == ("completed", None, None), done
    _assert_runs_only_on(cluster, "vm1", "host2")


def test_source_guest_gone_mid_stream_fails_and_says_so(cluster: TlsCluster) -> None:
    """The source's QEMU died mid-stream, the destination only ever had an incoming target:
    the guest runs nowhere. The migration fails saying so, the target is removed, the claim
    on the destination released, and the instance is in error on its source."""
    vm = _boot(cluster, "vm1", flavor="tiny")
    m = _migrate(cluster, "vm1", max_bandwidth_mib=8)  # 128 MiB: about 16 s
    _agent(cluster, "host1", "DELETE", f"/v1/guests/{vm['id']}")
    done = wait_until(lambda: _finished(cluster, m["id"]), what="migration end")
    assert done["state"] == "failed" and done["leftover"] is None
    assert done["error"] == "neither end runs it (host1 has no copy; host2 has it incoming)"
    instance = cluster.api("GET", "/v1/instances/vm1")
    assert (instance["host"], instance["state"]) == ("host1", "error")
    assert _guests(cluster, "host1") == [] and _guests(cluster, "host2") == []
    assert _allocations(cluster) == {"host1": 1}  # an instance in error keeps its claim
