"""Disk: the host's disk (after ratio and reservation) less its claims holds the request."""

from __future__ import annotations

from ferry.scheduler.model import Candidate, Request


class Disk:
    name = "disk"
    reason = "not enough free disk"
    static = False

    def passes(self, host: Candidate, request: Request) -> bool:
        return request.need.disk_gb <= host.capacity.disk_gb - host.used.disk_gb


FILTER = Disk()
