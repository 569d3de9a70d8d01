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
from ferry.agent.drivers.base import DiskCopy, DiskInventory, DiskSpec, DriverError, GuestSpec
from ferry.agent.images import ImageFetcher

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
        try:
            await self._make(temp, disk, base, max(disk.size_bytes, disk.image.virtual_size_bytes))
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        temp.replace(path)
        return path

    async def _make(self, temp: Path, disk: DiskSpec, base: Path, size: int) -> None:
        """Write the overlay of `size` bytes on `base` at `temp` (renamed into place after)."""
        proc = await asyncio.create_subprocess_exec(
            self.qemu_img, "create", "-q", "-f", "qcow2", "-F", disk.image.format,
            "-b", str(base), str(temp), str(size),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _out, err = await proc.communicate()
        if proc.returncode != 0:
            why = err.decode(errors="replace").strip() or f"exit {proc.returncode}"
            raise DriverError(f"cannot create the disk of {temp.parent.name}: {why}")

    def remove(self, instance_id: str) -> None:
        shutil.rmtree(self.settings.path / instance_id, ignore_errors=True)

    def inventory(self) -> DiskInventory:
        files = {d.parent.name: d for d in self.settings.path.glob(f"*/{DISK_FILE}")}
        usage = self.usage()
        allocated = {} if self.shared else {i: _allocated(f) for i, f in files.items()}
        return DiskInventory(
            self.settings.kind,
            self.settings.pool,
            sorted(files),
            usage.total_bytes,
            usage.free_bytes,
            {i: n for i, n in allocated.items() if n is not None},
        )

    def usage(self) -> StorageUsage:
        usage = shutil.disk_usage(self.settings.path)
        return StorageUsage(usage.total, usage.free)


def _allocated(path: Path) -> int | None:
    """The bytes the file holds on disk (a qcow2 overlay's allocated clusters and its metadata);
    None when it went away meanwhile."""
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return None


def check_incoming(store: DiskStore | None, spec: GuestSpec, copy: DiskCopy | None) -> None:
    """Whether a migration target of `spec` can have its disk here: on shared storage the
    source's own file, on local storage a copy (`copy`: the source mirrors into it)."""
    if spec.disk is None:
        if copy is not None:
            raise DriverError(f"{spec.name} has no disk to copy")
        return
    if store is None:
        raise DriverError(f"{spec.name} has a disk but this host has no instance storage")
    if copy is None and not store.shared:
        raise DriverError(
            f"{spec.name}: its disk is on another host's local storage, which this host cannot "
            "open: it moves here only with a copy of its disk"
        )
    if copy is not None and store.shared:
        raise DriverError(
            f"{spec.name}: local disks move only to local storage, and this host's is the "
            f"shared pool {store.settings.pool!r}"
        )


async def attach(
    store: DiskStore | None, images: ImageFetcher | None, spec: GuestSpec, *, incoming: bool
) -> tuple[Path, Path] | None:
    """(overlay, image) that `spec` starts on here, its image fetched and its overlay made on a
    first start; None for a diskless guest. A migration target (`check_incoming` passed) opens
    the source's overlay on shared storage, and on local storage makes an empty overlay of the
    same size on the same image, replacing any copy a failed attempt left: only the overlay's
    own data then crosses the link. Without a fetcher (simulated hosts at scale) the image is
    taken as cached."""
    if spec.disk is None:
        return None
    if store is None:
        raise DriverError(f"{spec.name} has a disk but this host has no instance storage")
    image = spec.disk.image
    base = await images.ensure(image) if images else Path("/cached") / image.sha256
    if incoming and not store.shared:
        store.remove(spec.id)
    if not incoming or not store.shared:
        return await store.create(spec.id, spec.disk, base), base
    if not store.exists(spec.id):
        raise DriverError(
            f"{spec.name}: no disk at {store.path(spec.id)}: the source's disk is not in this "
            f"host's pool {store.settings.pool!r}"
        )
    return store.path(spec.id), base
