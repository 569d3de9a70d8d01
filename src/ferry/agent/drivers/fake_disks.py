"""Instance disks of simulated hosts: the same rules as the QEMU driver's, on small files.

A disk is `<storage>/<instance id>/disk.qcow2` holding JSON (its image's sha256 and its size)
instead of a qcow2 overlay; it is made by the first start and never replaced, removed only when
the instance is deleted, and a migration target opens the source's file on shared storage and
refuses on local storage, as the QEMU driver does (both through `storage.attach`). With an image
fetcher the image really is fetched and checked into the host's cache first, so the fake cluster
takes the agents' image path too; without one (scale runs) the image is taken as cached.
"""

from __future__ import annotations

import json
from pathlib import Path

from ferry.agent.drivers.base import DiskSpec
from ferry.agent.storage import DiskStore


class FakeDiskStore(DiskStore):
    async def _make(self, temp: Path, disk: DiskSpec, base: Path, size: int) -> None:
        record = {"image": disk.image.sha256, "size": size, "base": str(base)}
        temp.write_text(json.dumps(record))  # noqa: ASYNC240 - a few bytes, a simulated host
