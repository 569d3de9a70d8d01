"""Storage: an instance that moves with a root disk goes only where its disk can be: a host of
the same shared pool (which reaches the disk as it is), or, for a disk on the local storage of
the host it leaves, another host with local storage (a copy of the disk moves with it; the
`disk` filter checks the room for it). New instances and diskless ones pass."""

from __future__ import annotations

from ferry.scheduler.model import Candidate, Request


class Storage:
    name = "storage"
    reason = "cannot hold the instance's disk (another shared pool, or not local storage)"
    static = True

    def passes(self, host: Candidate, request: Request) -> bool:
        if request.disk_pool is None:
            return True
        return host.storage_pool == request.disk_pool


FILTER = Storage()
