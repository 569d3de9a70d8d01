"""Every network of the instance's ports exists on the host, so its addresses survive there."""

from __future__ import annotations

from ferry.scheduler.model import Candidate, Request


class Network:
    name = "network"
    reason = "network not on host"
    static = True

    def passes(self, host: Candidate, request: Request) -> bool:
        return request.networks <= host.networks


FILTER = Network()
