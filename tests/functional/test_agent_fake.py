"""The whole control path with real processes and real mutual TLS; guests are simulated.

Controller (HTTPS) <-> agent (HTTPS, accepts only the controller's certificate), fake driver."""

from __future__ import annotations

import json
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.pki.ca import init_ca, issue
from tests.functional.cluster import TlsCluster, started, wait_until


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[TlsCluster]:
    with started(tmp_path) as running:
        yield running


def _instance(cluster: TlsCluster, name: str) -> dict[str, Any]:
    result: dict[str, Any] = cluster.api("GET", f"/v1/instances/{name}")
    return result


def _agent_url(cluster: TlsCluster, host: str) -> str:
    return str(cluster.api("GET", f"/v1/hosts/{host}")["agent_url"])


def test_instance_lifecycle_over_mutual_tls(cluster: TlsCluster) -> None:
    config = cluster.agent_config("host1")
    agent = cluster.start_agent(config)
    wait_until(
        lambda: any(
            h["name"] == "host1" and h["liveness"] == "up" for h in cluster.api("GET", "/v1/hosts")
        ),
        what="registration",
    )
    cluster.api("POST", "/v1/flavors", json={"name": "tiny", "vcpus": 1, "ram_mb": 128})
    cluster.api(
        "POST",
        "/v1/networks",
        json={"name": "default", "cidr": "198.19.0.0/16", "gateway": "198.19.0.1"},
    )
    created = cluster.api(
        "POST", "/v1/instances", json={"name": "vm1", "flavor": "tiny", "network": "default"}
    )
    assert created["host"] == "host1" and created["ports"][0]["ip"] == "198.19.0.2"
    wait_until(lambda: _instance(cluster, "vm1")["state"] == "running", what="vm1 running")

    # The agent lists the guest to the controller's certificate only.
    url = _agent_url(cluster, "host1")
    guests = httpx.get(f"{url}/v1/guests", verify=cluster.client_tls(cluster.controller_cert))
    assert [g["name"] for g in guests.json()] == ["vm1"]

    # An agent restart (even a SIGKILL) keeps its guests and re-registers.
    agent.stop(signal.SIGKILL)
    cluster.start_agent(config)
    wait_until(lambda: _guest_names(cluster, url) == ["vm1"], what="agent back")
    assert _instance(cluster, "vm1")["state"] == "running"

    cluster.api("DELETE", "/v1/instances/vm1")
    wait_until(lambda: _guest_names(cluster, url) == [], what="guest destroyed")
    wait_until(lambda: cluster.api("GET", "/v1/instances") == [], what="instance gone")
    kinds = [e["kind"] for e in cluster.api("GET", "/v1/events?kind=instance&order=asc")["items"]]
    assert kinds == [
        "instance.created",
        "instance.running",
        "instance.deleting",
        "instance.deleted",
    ]


def _guest_names(cluster: TlsCluster, url: str) -> list[str] | None:
    try:
        response = httpx.get(
            f"{url}/v1/guests", verify=cluster.client_tls(cluster.controller_cert), timeout=5
        )
    except httpx.TransportError:
        return None
    return [g["name"] for g in response.json()]


def test_agent_accepts_only_the_controller_certificate(cluster: TlsCluster, tmp_path: Path) -> None:
    config = cluster.agent_config("host1")
    cluster.start_agent(config)
    wait_until(
        lambda: any(h["name"] == "host1" for h in cluster.api("GET", "/v1/hosts")),
        what="registration",
    )
    url = _agent_url(cluster, "host1")
    ok = httpx.get(f"{url}/v1/facts", verify=cluster.client_tls(cluster.controller_cert))
    assert ok.json()["host"] == "host1"

    other_host = issue(cluster.pki, "host2", ips=["127.0.0.1"])  # same CA, not the controller
    init_ca(tmp_path / "rogue")
    rogue = issue(tmp_path / "rogue", "controller", ips=["127.0.0.1"], kind="controller")
    for name, context in [
        ("no certificate", cluster.client_tls()),
        ("another host of the cluster", cluster.client_tls(other_host)),
        ("a foreign CA's 'controller'", _with_cert(cluster, rogue.cert, rogue.key)),
    ]:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(f"{url}/v1/facts", verify=context)
            pytest.fail(f"the agent accepted {name}")


def _with_cert(cluster: TlsCluster, cert: Path, key: Path) -> ssl.SSLContext:
    context = cluster.client_tls()
    context.load_cert_chain(str(cert), str(key))
    return context


def test_placement_respects_maintenance_and_reports_reasons(cluster: TlsCluster) -> None:
    for name in ("host1", "host2"):
        cluster.start_agent(cluster.agent_config(name))
    wait_until(lambda: len(cluster.api("GET", "/v1/hosts?liveness=up")) == 2, what="2 hosts")
    cluster.api("POST", "/v1/flavors", json={"name": "big", "vcpus": 1, "ram_mb": 3000})
    cluster.api("POST", "/v1/networks", json={"name": "default", "cidr": "198.19.0.0/16"})
    cluster.api("POST", "/v1/hosts/host1/maintenance/enter", json={"reason": "firmware"})
    placed = [
        cluster.api(
            "POST", "/v1/instances", json={"name": f"vm{i}", "flavor": "big", "network": "default"}
        )["host"]
        for i in range(1)
    ]
    assert placed == ["host2"]
    refused = httpx.post(
        f"{cluster.url}/v1/instances",
        verify=cluster.client_tls(),
        headers={"Authorization": f"Bearer {cluster.admin}"},
        json={"name": "vm9", "flavor": "big", "network": "default"},
    )
    assert refused.status_code == 409
    message = json.loads(refused.text)["message"]
    assert "host in maintenance: 1" in message and "not enough free" in message
