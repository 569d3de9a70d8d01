"""RAM: the host's capacity (after its allocation ratio and reservation) less its claims holds
the request."""

from __future__ import annotations

from ferry.scheduler.model import Candidate, Request


class Ram:
    name = "ram"
    reason = "not enough free RAM"
    static = False

    def passes(self, host: Candidate, request: Request) -> bool:
        return request.need.ram_mb <= host.capacity.ram_mb - host.used.ram_mb


FILTER = Ram()
