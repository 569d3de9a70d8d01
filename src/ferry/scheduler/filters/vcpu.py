"""vCPU: the host's vCPUs times its CPU allocation ratio, less reserved and claimed ones, hold
the request."""

from __future__ import annotations

from ferry.scheduler.model import Candidate, Request


class Vcpu:
    name = "vcpu"
    reason = "not enough free vCPU"
    static = False

    def passes(self, host: Candidate, request: Request) -> bool:
        return request.need.vcpus <= host.capacity.vcpus - host.used.vcpus


FILTER = Vcpu()
