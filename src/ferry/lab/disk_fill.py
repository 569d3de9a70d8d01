"""Giving a lab guest's local disk data to move: `fill` writes MiB of a pattern into the guest's
disk through its own QEMU (HMP `qemu-io` on the disk device, as the guest would write, so the
overlay allocates it), past the lab image's partitions, where the guest never reads or writes.
What a move of the disk then copies is that much more than the fresh overlay.

The guest's QMP socket is in its host's run directory (`<lab>/hosts/<host>/run/<id>/qmp.sock`,
lab/cluster.py): the lab's namespaces share the filesystem, so the bench reaches it directly.
"""

from __future__ import annotations

from pathlib import Path

from qemu.qmp import QMPClient

from ferry.lab.lifecycle import LabError

MIB = 1 << 20
CHUNK_MIB = 64  # one qemu-io write: QEMU holds the buffer while it writes
# Where the data starts: past the lab image's 256 MiB of partitions, with room to spare.
OFFSET_MIB = 512
DEVICE = "/machine/peripheral/disk0/virtio-backend"


def qmp_socket(lab_dir: Path, host: str, instance_id: str) -> Path:
    return lab_dir / "hosts" / host / "run" / instance_id / "qmp.sock"


def flavor_disk_gb(fill_mib: int) -> int:
    """The virtual size, in GiB, that holds the image's partitions and `fill_mib` past them."""
    return -(-(OFFSET_MIB + fill_mib) // 1024)


async def fill(socket: Path, mib: int, pattern: int = 0x5A) -> None:
    """Write `mib` MiB of `pattern` into the guest's disk at OFFSET_MIB, in CHUNK_MIB writes.
    LabError naming the guest when QEMU refuses (qemu-io prints its errors in the reply)."""
    client = QMPClient(f"bench-fill-{socket.parent.name[:8]}")
    try:
        await client.connect(str(socket))
    except OSError as exc:
        raise LabError(f"cannot reach the QEMU of {socket.parent.name}: {exc}") from exc
    try:
        for start in range(0, mib, CHUNK_MIB):
            size = min(CHUNK_MIB, mib - start)
            command = f"write -P {pattern:#x} {(OFFSET_MIB + start) * MIB} {size * MIB}"
            line = f'qemu-io -d {DEVICE} "{command}"'
            reply = await client.execute("human-monitor-command", {"command-line": line})
            if isinstance(reply, str) and ("error" in reply.lower() or "failed" in reply):
                raise LabError(f"writing to the disk of {socket.parent.name}: {reply.strip()}")
    finally:
        await client.disconnect()
