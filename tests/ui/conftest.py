"""The dashboard in a real browser (tests/ui/browser.py) against a real controller over HTTPS
with three fake-driver agents over mutual TLS, as in tests/functional. Their storage is local
(the agents' default): the instances of INSTANCES boot without an image (RAM only); `disks`
adds instances with a disk on host2, which a move copies."""

from __future__ import annotations

import os
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
# On host2: `disky` boots from a 1 GiB disk on local storage (256 MiB allocated in the fake, what
# its move copies), `plain` has no disk (it moves its RAM only).
DISKY, PLAIN = "disky", "plain"


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
def disks(cluster: UiCluster) -> tuple[str, str]:
    """An image, and on host2 an instance booted from a local disk of it and one without."""
    image = os.urandom(4096) + bytes(1 << 20)
    cluster.api("POST", "/v1/images", params={"name": "img", "format": "raw"}, content=image)
    flavor = {"name": "d1", "vcpus": 1, "ram_mb": 128, "disk_gb": 1}
    cluster.api("POST", "/v1/flavors", json=flavor)
    for name, extra in ((DISKY, {"image": "img"}), (PLAIN, {})):
        body = {"name": name, "flavor": "d1", "network": "default", "host": "host2"}
        cluster.api("POST", "/v1/instances", json=body | extra)
    wait_until(
        lambda: all(
            cluster.api("GET", f"/v1/instances/{n}")["state"] == "running" for n in (DISKY, PLAIN)
        ),
        timeout=60,
        what="disky and plain running",
    )
    return DISKY, PLAIN


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
