"""Live-migration workflow through real processes (controller over HTTPS, two agents with the
fake driver, mutual TLS), with the fake's pre-copy model standing in for QEMU."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.functional.cluster import TlsCluster, wait_until

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
    url = cluster.api("GET", f"/v1/hosts/{host}")["agent_url"]
    tls = cluster.client_tls(cluster.controller_cert)
    return [g["name"] for g in httpx.get(f"{url}/v1/guests", verify=tls).json()]


def test_migration_completes_and_moves_everything(cluster: TlsCluster) -> None:
    _boot(cluster, "vm1")
    m = cluster.api("POST", "/v1/instances/vm1/migrate", json={})
    assert (m["source"], m["destination"], m["state"]) == ("host1", "host2", "scheduled")
    done = wait_until(lambda: _finished(cluster, m["id"]), what="migration end")
    assert done["state"] == "completed", done
    assert done["bytes_total"] == 512 * 2**20 and done["bytes_sent"] >= done["bytes_total"]
    assert done["downtime_ms"] is not None and done["finished_at"] is not None
    assert cluster.api("GET", "/v1/instances/vm1")["host"] == "host2"
    assert _guests(cluster, "host2") == ["vm1"] and _guests(cluster, "host1") == []
    hosts = {h["name"]: h["instances"] for h in cluster.api("GET", "/v1/hosts")}
    assert hosts == {"host1": 0, "host2": 1}
    kinds = [
        e["kind"]
        for e in cluster.api("GET", "/v1/events?kind=migration&order=asc&limit=50")["items"]
    ]
    assert kinds == [
        "migration.scheduled",
        "migration.preparing",
        "migration.running",
        "migration.completed",
    ]


def test_abort_mid_flight_keeps_instance_on_source(cluster: TlsCluster) -> None:
    _boot(cluster, "vm1")
    m = cluster.api(
        "POST", "/v1/instances/vm1/migrate", json={"policy": {"max_bandwidth_mib": 1}}
    )  # 512 s to copy: it lasts
    wait_until(
        lambda: cluster.api("GET", f"/v1/migrations/{m['id']}")["state"] == "running",
        what="running",
    )
    cluster.api("POST", f"/v1/migrations/{m['id']}/abort")
    done = wait_until(lambda: _finished(cluster, m["id"]), what="abort")
    assert done["state"] == "cancelled" and done["error"] == "aborted on request"
    assert cluster.api("GET", "/v1/instances/vm1")["host"] == "host1"
    assert _guests(cluster, "host1") == ["vm1"] and _guests(cluster, "host2") == []
    hosts = {h["name"]: h["instances"] for h in cluster.api("GET", "/v1/hosts")}
    assert hosts == {"host1": 1, "host2": 0}


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
    assert done["downtime_limit_ms"] > 300


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
    assert cluster.api("GET", "/v1/instances/vm1")["host"] == "host2"
    assert _guests(cluster, "host2") == ["vm1"] and _guests(cluster, "host1") == []
    hosts = {h["name"]: h["instances"] for h in cluster.api("GET", "/v1/hosts")}
    assert hosts == {"host1": 0, "host2": 1}
