"""A host whose agent has missed its heartbeats cannot start or receive a guest."""

from __future__ import annotations

from ferry.scheduler.model import Candidate, Request


class HostUp:
    name = "host_up"
    reason = "host down"
    static = True

    def passes(self, host: Candidate, request: Request) -> bool:
        return host.up


FILTER = HostUp()
