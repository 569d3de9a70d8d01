"""Webhook notifications: which events a subscription receives, how its input is checked, how a
delivery is signed, and how long to wait between attempts. Pure rules, no I/O."""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import urlsplit

from ferry.domain.errors import InvalidInput
from ferry.domain.events import EventKind

FAMILIES = ("host.maintenance", "drain", "migration")
"""The kinds a webhook may carry: a family matches itself and every kind below it."""

NOTIFIED = tuple(
    kind.value for kind in EventKind if any(kind.value.startswith(f + ".") for f in FAMILIES)
)

URL_MAX = 2048
SECRET_MIN = 16
SECRET_MAX = 256
PREFIXES_MAX = 32
SIGNATURE_HEADER = "X-Ferry-Signature"
TIMESTAMP_HEADER = "X-Ferry-Timestamp"
_PREFIX = re.compile(r"^[a-z][a-z_]*(\.[a-z_]+)*$")
_SECRET = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces


def matches(kind: str, prefix: str) -> bool:
    """'migration' matches 'migration' and 'migration.failed', not 'migrations.x'."""
    return kind == prefix or kind.startswith(prefix + ".")


def notified(kind: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    """Whether a subscription narrowed to `prefixes` receives events of `kind`."""
    in_family = any(matches(kind, family) for family in FAMILIES)
    return in_family and any(matches(kind, prefix) for prefix in prefixes)


def kind_prefixes(given: list[str] | None) -> list[str]:
    """The prefixes a subscription keeps: the three families when none are given; otherwise each
    given one (a trailing '.' is dropped), once, in order, and each must match a notified kind."""
    if not given:
        return list(FAMILIES)
    if len(given) > PREFIXES_MAX:
        raise InvalidInput(f"at most {PREFIXES_MAX} kind prefixes, not {len(given)}")
    kept: list[str] = []
    for raw in given:
        prefix = raw.strip().removesuffix(".")
        if not _PREFIX.fullmatch(prefix):
            raise InvalidInput(
                f"invalid kind prefix {raw!r}: dotted lowercase words such as 'migration.failed'"
            )
        if not any(matches(kind, prefix) for kind in NOTIFIED):
            raise InvalidInput(
                f"kind prefix {raw!r} matches no maintenance, drain or migration event:"
                f" use {', '.join(FAMILIES)} or a narrower prefix such as 'migration.failed'"
            )
        if prefix not in kept:
            kept.append(prefix)
    return kept


def webhook_url(url: str) -> str:
    """An http(s) URL with a host, at most 2048 characters, without spaces."""
    value = url.strip()
    problem = None
    if not value or len(value) > URL_MAX:
        problem = f"1-{URL_MAX} characters"
    elif any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        problem = "no spaces or control characters"
    else:
        try:
            parts = urlsplit(value)
            _port = parts.port  # raises for a port out of range
        except ValueError as exc:
            problem = str(exc)
        else:
            if parts.scheme not in ("http", "https"):
                problem = "the scheme must be http or https"
            elif not parts.hostname:
                problem = "a host is required"
    if problem:
        raise InvalidInput(f"invalid webhook url {url!r}: {problem}")
    return value


def webhook_secret(secret: str) -> str:
    if not SECRET_MIN <= len(secret) <= SECRET_MAX or not _SECRET.fullmatch(secret):
        raise InvalidInput(
            f"invalid webhook secret: {SECRET_MIN}-{SECRET_MAX} printable ASCII characters,"
            " no spaces"
        )
    return secret


def signature(secret: str, body: bytes) -> str:
    """The X-Ferry-Signature value: 'sha256=' and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(failed_attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after the n-th failed attempt: base, 2·base, 4·base, ..., at most cap."""
    return float(min(cap, base * 2 ** min(max(failed_attempts - 1, 0), 32)))
