"""The dashboard in a real browser (Debian's chromium driven by Playwright) against a real
controller over HTTPS with three fake-driver agents over mutual TLS, as in tests/functional.

The browser trusts exactly the test controller's key (`--ignore-certificate-errors-spki-list`
with its SPKI hash), so certificate checks stay on for everything else. Screenshots of the key
steps, and of the page when a test fails, go to $FERRY_ARTIFACTS (default tests/ui/artifacts).
Without /usr/bin/chromium the tests are skipped, except in CI (CI set), where they fail."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.functional.cluster import TlsCluster, wait_until

CHROMIUM = Path("/usr/bin/chromium")
# Read at import: an autouse fixture removes FERRY_* variables while tests run.
ARTIFACTS = Path(os.environ.get("FERRY_ARTIFACTS") or Path(__file__).parent / "artifacts")
HOSTS = ("host1", "host2", "host3")
INSTANCES = ("web1", "web2", "web3")
OPERATOR, READER = "ops-alice", "viewer"

expect.set_options(timeout=20_000)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


def _require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing (scripts/setup.sh installs the chromium package)")
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")


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

    def spki_hash(self) -> str:
        """base64 SHA-256 of the controller certificate's public key, as chromium wants it."""
        cert = x509.load_pem_x509_certificate(self.tls.controller_cert.cert.read_bytes())
        spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[UiCluster]:
    _require_chromium()
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
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", f"--ignore-certificate-errors-spki-list={cluster.spki_hash()}"],
        )
        try:
            yield launched
        finally:
            launched.close()


class Dashboard:
    """One browser tab on the dashboard, with the steps the tests take."""

    def __init__(self, page: Page, cluster: UiCluster, name: str) -> None:
        self.page = page
        self.cluster = cluster
        self.name = name
        self.shots = 0
        self.errors: list[str] = []
        self.log: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda msg: self.log.append(f"console.{msg.type}: {msg.text}"))
        page.on(
            "requestfailed",
            lambda req: self.log.append(f"request failed: {req.url} {req.failure}"),
        )

    def shot(self, step: str) -> Path:
        self.shots += 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{self.shots:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def open(self, fragment: str = "") -> None:
        self.page.goto(f"{self.cluster.url}/ui/{fragment}")

    def sign_in(self, role: str) -> None:
        self.open()
        self.page.get_by_test_id("token").fill(self.cluster.tokens[role])
        self.page.get_by_test_id("signin-submit").click()
        name = OPERATOR if role == "operator" else READER
        expect(self.page.get_by_test_id("who")).to_have_text(f"{name} ({role})")
        expect(self.page.get_by_test_id("live")).to_have_attribute("data-state", "live")

    def host_row(self, host: str) -> Locator:
        return self.page.get_by_test_id(f"host-row-{host}")

    def open_host(self, host: str) -> None:
        self.page.get_by_role("link", name=host, exact=True).click()
        expect(self.page.get_by_test_id("host-name")).to_have_text(host)

    def dialog(self, action: str) -> Locator:
        return self.page.get_by_test_id(f"dialog-{action}")


@pytest.fixture
def dashboard(
    browser: Browser, cluster: UiCluster, request: pytest.FixtureRequest
) -> Iterator[Dashboard]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    board = Dashboard(context.new_page(), cluster, name)
    try:
        yield board
        assert not board.errors, f"uncaught errors in the page: {board.errors}"
    finally:
        if request.node.stash.get(_FAILED, False):
            board.shot("failed")
            (ARTIFACTS / f"{name}-browser.log").write_text("\n".join(board.log) + "\n")
            print("\n".join(["browser log:", *board.log]))
        context.close()
