"""A host in maintenance (draining, drained or failed to drain) takes nothing new until exit."""

from __future__ import annotations

from ferry.scheduler.model import Candidate, Request


class InService:
    name = "in_service"
    reason = "host in maintenance"
    static = True

    def passes(self, host: Candidate, request: Request) -> bool:
        return host.in_service


FILTER = InService()
