"""Hosts and requests for scheduler tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ferry.scheduler.model import Candidate, Request, Resources, Traits

BIG = Resources(16, 32768, 500)
NONE = Resources(0, 0, 0)
TRAITS = Traits("qemu64-ferry", "pc-q35-8.2", "8.2.2")
SMALL = Request(Resources(2, 2048, 20), frozenset({"prod"}))


def host(name: str, **changes: Any) -> Candidate:
    base = Candidate(name, True, True, True, BIG, NONE, frozenset({"prod", "storage"}), TRAITS)
    return replace(base, **changes)
