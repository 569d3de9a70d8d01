"""A host an operator disabled takes nothing new."""

from __future__ import annotations

from ferry.scheduler.model import Candidate, Request


class Enabled:
    name = "enabled"
    reason = "host disabled"
    static = True

    def passes(self, host: Candidate, request: Request) -> bool:
        return host.enabled


FILTER = Enabled()
