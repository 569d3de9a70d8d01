"""Validation of operator input shared by every entry point (API, CLI, config)."""

from __future__ import annotations

import re
import unicodedata

from ferry.domain.errors import InvalidInput

REASON_MAX = 255
_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def reason(text: str, *, field: str = "reason") -> str:
    """A reason is 1-255 characters of printable text once surrounding space is stripped."""
    value = text.strip()
    if not value:
        raise InvalidInput(f"{field} must not be empty")
    if len(value) > REASON_MAX:
        raise InvalidInput(f"{field} is {len(value)} characters long; at most {REASON_MAX}")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise InvalidInput(f"{field} must not contain control characters")
    return value


def host_name(name: str) -> str:
    """Host names are DNS labels or dotted names: lowercase letters, digits, '-' and '.'."""
    if not _HOST_NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid host name {name!r}: use 1-63 lowercase letters, digits, '-' or '.',"
            " starting and ending with a letter or digit"
        )
    return name


def token_name(name: str) -> str:
    if not _TOKEN_NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid token name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'"
        )
    return name
