"""Hard affinity: once a member of the group runs somewhere, the others go only to hosts that
hold a member."""

from __future__ import annotations

from ferry.scheduler.model import Candidate, GroupPolicy, Request


class Affinity:
    name = "affinity"
    reason = "server-group affinity"
    static = False

    def passes(self, host: Candidate, request: Request) -> bool:
        group = request.group
        if group is None or group.policy is not GroupPolicy.AFFINITY or not group.placed:
            return True
        return host.members.get(group.name, 0) > 0


FILTER = Affinity()
