"""The dashboard in a real browser (tests/ui/browser.py) against a real controller over HTTPS
with three fake-driver agents over mutual TLS, as in tests/functional."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from tests.functional.cluster import TlsCluster, wait_until
from tests.ui.browser import OPERATOR, READER, Dashboard, chromium, dashboard_tab, require_chromium

HOSTS = ("host1", "host2", "host3")
INSTANCES = ("web1", "web2", "web3")


@dataclass
class UiCluster:
    """The cluster, with tokens for an operator and a reader."""

    tls: TlsCluster
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.tls.url

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.tls.api(method, path, **kwargs)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[UiCluster]:
    require_chromium()
    tls = TlsCluster(tmp_path)
    tls.start_controller()
    try:
        for name in HOSTS:
            tls.start_agent(tls.agent_config(name))
        wait_until(lambda: len(tls.api("GET", "/v1/hosts?liveness=up")) == 3, what="hosts up")
        tls.api("POST", "/v1/flavors", json={"name": "tiny", "vcpus": 1, "ram_mb": 128})
        tls.api("POST", "/v1/networks", json={"name": "default", "cidr": "198.19.0.0/16"})
        for name in INSTANCES:
            body = {"name": name, "flavor": "tiny", "network": "default", "host": "host1"}
            tls.api("POST", "/v1/instances", json=body)
        wait_until(
            lambda: all(
                tls.api("GET", f"/v1/instances/{n}")["state"] == "running" for n in INSTANCES
            ),
            what="instances running",
        )
        ui = UiCluster(tls)
        for name, role in ((OPERATOR, "operator"), (READER, "reader")):
            created = tls.api("POST", "/v1/tokens", json={"name": name, "role": role})
            ui.tokens[role] = created["secret"]
        yield ui
    finally:
        tls.stop_all()


@pytest.fixture
def browser(cluster: UiCluster) -> Iterator[Browser]:
    with chromium(cluster.tls.controller_cert.cert) as launched:
        yield launched


@pytest.fixture
def dashboard(
    browser: Browser, cluster: UiCluster, request: pytest.FixtureRequest
) -> Iterator[Dashboard]:
    with dashboard_tab(browser, cluster, request) as board:
        yield board
