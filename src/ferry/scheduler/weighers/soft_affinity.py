"""Soft affinity: hosts holding more members of the instance's group weigh more."""

from __future__ import annotations

from ferry.scheduler.model import Candidate, GroupPolicy, Request


class SoftAffinity:
    name = "soft_affinity"
    default_multiplier = 2.0

    def raw(self, host: Candidate, request: Request) -> float:
        group = request.group
        if group is None or group.policy is not GroupPolicy.SOFT_AFFINITY:
            return 0.0
        return float(host.members.get(group.name, 0))


WEIGHER = SoftAffinity()
