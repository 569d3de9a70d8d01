"""Instance disks on this host's storage: `<path>/<instance id>/disk.qcow2`, a qcow2 overlay whose
backing file is the image in the host's cache.

A disk is created once, by the first start of its instance on the storage, and then only reused:
a start again (after a crash, an agent restart, a retried request) must find the guest's data,
never a fresh overlay. It is made aside and renamed into place, so a half-made disk is never
taken for the guest's. On shared storage every host of the pool sees the same file; each QEMU
names the backing file itself (-blockdev, from its own cache), so the path recorded in the
overlay does not have to exist on every host. Deleting the instance removes its disk.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

from ferry.agent.config import StorageSettings
from ferry.agent.drivers.base import DiskSpec, DriverError

DISK_FILE = "disk.qcow2"


@dataclass(frozen=True)
class StorageUsage:
    total_bytes: int
    free_bytes: int


class DiskStore:
    def __init__(self, settings: StorageSettings, qemu_img: str = "qemu-img") -> None:
        self.settings = settings
        self.qemu_img = qemu_img
        settings.path.mkdir(parents=True, exist_ok=True)

    @property
    def shared(self) -> bool:
        return self.settings.kind == "shared"

    def path(self, instance_id: str) -> Path:
        return self.settings.path / instance_id / DISK_FILE

    def exists(self, instance_id: str) -> bool:
        return self.path(instance_id).is_file()

    async def create(self, instance_id: str, disk: DiskSpec, base: Path) -> Path:
        """The instance's disk, made now if it does not exist yet (it is never replaced)."""
        path = self.path(instance_id)
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{DISK_FILE}.new")
        size = max(disk.size_bytes, disk.image.virtual_size_bytes)
        proc = await asyncio.create_subprocess_exec(
            self.qemu_img, "create", "-q", "-f", "qcow2", "-F", disk.image.format,
            "-b", str(base), str(temp), str(size),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _out, err = await proc.communicate()
        if proc.returncode != 0:
            temp.unlink(missing_ok=True)
            why = err.decode(errors="replace").strip() or f"exit {proc.returncode}"
            raise DriverError(f"cannot create the disk of {instance_id}: {why}")
        temp.replace(path)
        return path

    def remove(self, instance_id: str) -> None:
        shutil.rmtree(self.settings.path / instance_id, ignore_errors=True)

    def usage(self) -> StorageUsage:
        usage = shutil.disk_usage(self.settings.path)
        return StorageUsage(usage.total, usage.free)
