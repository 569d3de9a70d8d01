"""The dashboard in Debian's chromium, driven by Playwright, against any controller over HTTPS:
the fake-driver cluster of tests/ui and the real-QEMU lab of tests/lab share this.

The browser trusts exactly the controller's key (`--ignore-certificate-errors-spki-list` with
its SPKI hash), so certificate checks stay on for everything else. Screenshots of the key steps,
and of the page when a test fails, go to $FERRY_ARTIFACTS (default tests/ui/artifacts).
Without /usr/bin/chromium the tests are skipped, except in CI (CI set), where they fail."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.outcome import CALL_FAILED

CHROMIUM = Path("/usr/bin/chromium")
# Read at import: an autouse fixture removes FERRY_* variables while tests run.
ARTIFACTS = Path(os.environ.get("FERRY_ARTIFACTS") or Path(__file__).parent / "artifacts")
OPERATOR, READER = "ops-alice", "viewer"  # the names of the tokens the tests sign in with

expect.set_options(timeout=20_000)


class Site(Protocol):
    """A controller the browser signs in to: its URL, a secret per role, and its API."""

    @property
    def url(self) -> str: ...

    @property
    def tokens(self) -> dict[str, str]: ...

    def api(self, method: str, path: str, **kwargs: Any) -> Any: ...


def require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing (scripts/setup.sh installs the chromium package)")
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")


def spki_hash(cert_pem: Path) -> str:
    """base64 SHA-256 of the certificate's public key, as chromium wants it."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@contextmanager
def chromium(controller_cert: Path) -> Iterator[Browser]:
    """Debian's chromium, headless, trusting the controller whose certificate is given."""
    require_chromium()
    with sync_playwright() as playwright:
        trusted = f"--ignore-certificate-errors-spki-list={spki_hash(controller_cert)}"
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", trusted]
        )
        try:
            yield launched
        finally:
            launched.close()


class Dashboard:
    """One browser tab on the dashboard, with the steps the tests take."""

    def __init__(self, page: Page, site: Site, name: str) -> None:
        self.page = page
        self.site = site
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
        self.page.goto(f"{self.site.url}/ui/{fragment}")

    def sign_in(self, role: str) -> None:
        self.open()
        self.page.get_by_test_id("token").fill(self.site.tokens[role])
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


@contextmanager
def dashboard_tab(
    browser: Browser, site: Site, request: pytest.FixtureRequest
) -> Iterator[Dashboard]:
    """A fresh tab for the test `request` names; when the test failed, a screenshot and the
    browser's log are kept; an uncaught error in the page fails the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    board = Dashboard(context.new_page(), site, name)
    try:
        yield board
        assert not board.errors, f"uncaught errors in the page: {board.errors}"
    finally:
        if request.node.stash.get(CALL_FAILED, False):
            board.shot("failed")
            (ARTIFACTS / f"{name}-browser.log").write_text("\n".join(board.log) + "\n")
            print("\n".join(["browser log:", *board.log]))
        context.close()
