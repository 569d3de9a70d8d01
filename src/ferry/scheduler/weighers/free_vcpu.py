"""Free vCPUs (after the allocation ratio) as a share of capacity: prefers hosts with CPU to
spare."""

from __future__ import annotations

from ferry.scheduler.model import Candidate, Request


class FreeVcpu:
    name = "free_vcpu"
    default_multiplier = 0.5

    def raw(self, host: Candidate, request: Request) -> float:
        free = host.capacity.vcpus - host.used.vcpus
        return free / host.capacity.vcpus if host.capacity.vcpus > 0 else 0.0


WEIGHER = FreeVcpu()
