"""Webhook rules: which kinds a subscription gets, input checks, signatures, backoff."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from ferry.domain.errors import InvalidInput
from ferry.domain.events import EventKind
from ferry.domain.webhooks import (
    FAMILIES,
    NOTIFIED,
    backoff,
    kind_prefixes,
    notified,
    signature,
    webhook_secret,
    webhook_url,
)


def test_notified_kinds_are_the_maintenance_drain_and_migration_ones() -> None:
    assert set(NOTIFIED) == {
        k.value
        for k in EventKind
        if k.value.startswith(("host.maintenance.", "drain.", "migration."))
    }
    assert "host.up" not in NOTIFIED and "webhook.dropped" not in NOTIFIED


@pytest.mark.parametrize(
    ("kind", "prefixes", "expected"),
    [
        ("migration.failed", FAMILIES, True),
        ("migration.failed", ("migration.failed",), True),
        ("migration.failed", ("migration.fail",), False),
        ("drain.started", ("migration",), False),
        ("host.maintenance.entered", ("host",), True),
        ("host.up", ("host",), False),
        ("webhook.created", FAMILIES, False),
        ("server_group.created", ("server_group",), False),
    ],
)
def test_notified(kind: str, prefixes: tuple[str, ...], expected: bool) -> None:
    assert notified(kind, prefixes) is expected


def test_kind_prefixes() -> None:
    assert kind_prefixes(None) == list(FAMILIES)
    assert kind_prefixes([]) == list(FAMILIES)
    assert kind_prefixes(["drain.", "migration.failed", "drain"]) == ["drain", "migration.failed"]
    assert kind_prefixes(["host"]) == ["host"]  # narrowed to host.maintenance by the families
    for bad in ("instance", "host.up", "Drain", "drain..x", "", "migration.failed.x"):
        with pytest.raises(InvalidInput):
            kind_prefixes([bad])


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "https://cmdb.example.com/x?y=1", "http://[::1]/"]
)
def test_good_urls(url: str) -> None:
    assert webhook_url(f" {url} ") == url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://x/",
        "mailto:a@b",
        "http://",
        "http:///x",
        "http://a b/",
        "http://h:0x/",
        "x" * 3000,
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidInput, match="invalid webhook url"):
        webhook_url(url)


def test_secrets() -> None:
    assert webhook_secret("x" * 16) == "x" * 16
    for bad in ("x" * 15, "x" * 257, "sixteen chars ok?", "tab\there-is-long-enough"):
        with pytest.raises(InvalidInput):
            webhook_secret(bad)


def test_signature_is_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"id":"1"}'
    digest = hmac.new(b"key-of-sixteen-chars", body, hashlib.sha256).hexdigest()
    assert signature("key-of-sixteen-chars", body) == f"sha256={digest}"


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 1.0, 60.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff(10_000, 0.05, 0.4) == 0.4
