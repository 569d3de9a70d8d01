"""Storage: an instance that moves with a root disk goes only where its disk is reachable, a host
of the same shared pool. A disk on the local storage of the host it leaves is reachable from
nowhere else (live migration of local disks copies them; Ferry does not yet), so such an
instance has no destination. New instances and diskless ones pass."""

from __future__ import annotations

from ferry.scheduler.model import Candidate, Request


class Storage:
    name = "storage"
    reason = "cannot reach the instance's disk (local to its host, or in another pool)"
    static = True

    def passes(self, host: Candidate, request: Request) -> bool:
        if request.disk_pool is None:
            return True
        return request.disk_pool != "" and host.storage_pool == request.disk_pool


FILTER = Storage()
