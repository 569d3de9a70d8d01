"""Reading an instance's disk where it lies, for the invariant "disk intact and in exactly one
place" (`DiskReading`):

- a fake host's disk is a small JSON record (agent/drivers/fake_disks.py) whose content (its
  image, its size, and `data`: what its guest wrote since its first start) is digested, leaving
  out the path of the image in that host's cache; a completed copy holds the source's content
  (agent/drivers/fake_mirror.py), a copy that never completed holds no `data` of the guest's,
  and a record that does not read fails the check;
- a real disk is a qcow2 overlay that `qemu-img check` must pass (with `-U`: its guest may run
  on it; leaked clusters are no damage); its guest writes all along, so its content is not
  compared.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

from ferry.agent.drivers.fake_mirror import CONTENT, read_disk
from ferry.faults.invariants import DiskReading

QEMU_IMG_TIMEOUT_S = 120.0
# qemu-img check: 0 no error, 3 leaked clusters only (allocations a running guest has in flight
# look leaked; they cost space, never data); 2 is corruption, 1 a check that could not be done.
INTACT = (0, 3)


def fake_disk_reading(path: Path) -> DiskReading | None:
    """The digest of a fake disk's content; None when there is no disk at `path`."""
    if not path.is_file():
        return None
    record = read_disk(path)
    if not record:
        return DiskReading(problem=f"{path} is not a disk record")
    content = {key: record.get(key) for key in CONTENT}
    if content["data"] is None:
        return DiskReading(_digest(content), "it holds none of its guest's data (an empty copy)")
    return DiskReading(_digest(content))


def _digest(content: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


async def qemu_img_reading(path: Path, qemu_img: str = "qemu-img") -> DiskReading | None:
    """`qemu-img check` of a real disk; None when there is no disk at `path`."""
    if not await asyncio.to_thread(path.is_file):
        return None
    proc = await asyncio.create_subprocess_exec(
        qemu_img, "check", "-U", "-f", "qcow2", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), QEMU_IMG_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return DiskReading(problem=f"qemu-img check did not end within {QEMU_IMG_TIMEOUT_S:g}s")
    if proc.returncode not in INTACT:
        said = " ".join(out.decode(errors="replace").split())[-300:]
        return DiskReading(problem=f"qemu-img check exits {proc.returncode}: {said}")
    return DiskReading()
