"""Hard anti-affinity: no two members of the group on one host."""

from __future__ import annotations

from ferry.scheduler.model import Candidate, GroupPolicy, Request


class AntiAffinity:
    name = "anti_affinity"
    reason = "server-group anti-affinity"
    static = False

    def passes(self, host: Candidate, request: Request) -> bool:
        group = request.group
        if group is None or group.policy is not GroupPolicy.ANTI_AFFINITY:
            return True
        return host.members.get(group.name, 0) == 0


FILTER = AntiAffinity()
