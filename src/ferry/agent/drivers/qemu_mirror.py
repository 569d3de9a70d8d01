"""A local disk copied live with its guest, in QMP: libvirt's `--copy-storage-all` flow over NBD,
with an exact switchover.

Destination (`export`): the target QEMU (`-incoming defer`, on an empty overlay of the source's
size over the same cached image) serves its root node writable with QEMU's NBD server, with the
host's server credentials and an authz list that admits the certificate of the migration's
source host only, on a Unix socket that the disk's TLS tunnel (nbd_tunnel.py) forwards the disk
port to: NBD's own TLS is STARTTLS-shaped, the tunnel makes the link TLS from the first byte.

Source (`start_mirror`): an NBD client node over TLS (`tls-hostname`, the destination's
certificate name), through the tunnel's local end, and `blockdev-mirror` of the root overlay
with `sync: top`: only the overlay's allocated clusters cross the link, the backing image is in
the destination's cache already. The mirror runs in `write-blocking` mode: once its background
copy has caught up it is `ready`, and from then on every guest write reaches both ends before
the guest sees it complete. A guest that writes faster than the link is so throttled to what the
link takes, and the mirror converges however fast the guest writes (the migration's timeouts
still end a copy that is too slow). The job keeps its record when it ends (`auto-dismiss` off),
so a failure is read, never missed.

Switchover (`complete_mirror`): the RAM stream runs with `pause-before-switchover`. In
`pre-switchover` the guest is paused and its devices are not yet sent; the mirror is then ended
with `block-job-cancel`, which on a ready mirror first copies all that is still dirty (the copy
then equals the disk; the source never pivots to it), the client node is deleted, and only then
does `migrate-continue` send the device state. The destination so starts the guest only on a
complete disk; if any of this fails the stream is cancelled and the source resumes on its disk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from ferry.agent.drivers.base import DriverError, MigrationChannel, MigrationParams
from ferry.agent.drivers.qemu_argv import TLS_CLIENT_ID, TLS_SERVER_ID
from ferry.agent.drivers.qemu_stream import add_client_creds, run
from ferry.pki import names

MIRROR_JOB = "ferry-mirror"
TARGET_NODE = "ferry-mirror-target"
SOURCE_NODE = "root"  # the guest's overlay node (qemu_argv.disk_argv)
EXPORT_NAME = "root"
EXPORT_ID = "ferry-disk"
DISK_AUTHZ_ID = "ferry-authz-disk"
MIRROR_FILE = "mirror.json"  # source run dir: a disk copy is part of this guest's migration
JOB_TIMEOUT = 30.0  # a mirror's last copy at the switchover, or its cancellation
JOB_POLL = 0.05
ENDED = frozenset({"concluded", "null", "aborting"})


def host_dn(host: str) -> str:
    """The subject of `host`'s certificate as QEMU's authz matches it."""
    return names.gnutls_dn(names.subject(host, names.CertKind.HOST.value))


@dataclass(frozen=True)
class DiskReading:
    """The mirror job as query-block-jobs reports it; None fields when there is no job."""

    total_bytes: int
    copied_bytes: int
    ready: bool
    status: str  # the job's status: created, running, ready, concluded, ...
    error: str | None


def reading_of(job: Mapping[str, Any] | None) -> DiskReading | None:
    if job is None:
        return None
    return DiskReading(
        total_bytes=int(job.get("len", 0)),
        copied_bytes=int(job.get("offset", 0)),
        ready=bool(job.get("ready", False)),
        status=str(job.get("status", "")),
        error=str(job["error"]) if job.get("error") else None,
    )


# -- destination ------------------------------------------------------------------------------


async def export(qmp: QMPClient, socket: Path, source_host: str) -> None:
    """Serve the guest's disk writable over NBD with TLS to `source_host`'s certificate only,
    on the Unix socket the disk's TLS tunnel forwards to (nbd_tunnel.py)."""
    rule = {"match": host_dn(source_host), "policy": "allow", "format": "exact"}
    authz = {"qom-type": "authz-list", "id": DISK_AUTHZ_ID, "policy": "deny", "rules": [rule]}
    await run(qmp, "object-add", authz)
    address = {"type": "unix", "data": {"path": str(socket)}}
    server = {"addr": address, "tls-creds": TLS_SERVER_ID, "tls-authz": DISK_AUTHZ_ID}
    await run(qmp, "nbd-server-start", server)
    await run(
        qmp,
        "block-export-add",
        {
            "type": "nbd",
            "id": EXPORT_ID,
            "node-name": SOURCE_NODE,
            "name": EXPORT_NAME,
            "writable": True,
        },
    )


async def stop_export(qmp: QMPClient) -> None:
    """The guest runs here on its copy: no one writes to it over the network any more."""
    try:
        await run(qmp, "nbd-server-stop")
    except DriverError as exc:
        if "not running" not in str(exc):
            raise


# -- source -----------------------------------------------------------------------------------


async def mirror_job(qmp: QMPClient) -> dict[str, Any] | None:
    jobs = await run(qmp, "query-block-jobs")
    return next((j for j in jobs if j.get("device") == MIRROR_JOB), None)


async def _has_node(qmp: QMPClient, node: str) -> bool:
    nodes = await run(qmp, "query-named-block-nodes", {"flat": True})
    return any(n.get("node-name") == node for n in nodes)


async def start_mirror(
    qmp: QMPClient, creds: Path, socket: Path, channel: MigrationChannel, params: MigrationParams
) -> None:
    """Connect to the destination's export over TLS (through the tunnel's local end, `socket`)
    and start copying the overlay into it."""
    await add_client_creds(qmp, creds)
    if not await _has_node(qmp, TARGET_NODE):
        server = {"type": "unix", "path": str(socket)}
        node = {
            "driver": "nbd",
            "node-name": TARGET_NODE,
            "server": server,
            "export": EXPORT_NAME,
            "tls-creds": TLS_CLIENT_ID,
            "tls-hostname": channel.tls_hostname,
        }
        await run(qmp, "blockdev-add", node)
    await run(
        qmp,
        "blockdev-mirror",
        {
            "job-id": MIRROR_JOB,
            "device": SOURCE_NODE,
            "target": TARGET_NODE,
            "sync": "top",
            "copy-mode": "write-blocking",
            "speed": params.max_bandwidth_bytes,
            "auto-finalize": True,
            "auto-dismiss": False,
        },
    )


async def set_speed(qmp: QMPClient, speed: int) -> None:
    job = await mirror_job(qmp)
    if job is not None and str(job.get("status")) not in ENDED:
        await run(qmp, "block-job-set-speed", {"device": MIRROR_JOB, "speed": speed})


async def _until_ended(qmp: QMPClient, within: float = JOB_TIMEOUT) -> DiskReading | None:
    """Until the job concluded (or is gone); its last reading."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        reading = reading_of(await mirror_job(qmp))
        if reading is None or reading.status in ("concluded", "null"):
            return reading
        if loop.time() > deadline:
            raise DriverError(f"the disk mirror is still {reading.status} after {JOB_TIMEOUT:g} s")
        await asyncio.sleep(JOB_POLL)


async def _dismiss(qmp: QMPClient) -> None:
    job = await mirror_job(qmp)
    if job is not None and str(job.get("status")) == "concluded":
        await run(qmp, "job-dismiss", {"id": MIRROR_JOB})
    if await _has_node(qmp, TARGET_NODE):
        await run(qmp, "blockdev-del", {"node-name": TARGET_NODE})


async def complete_mirror(qmp: QMPClient) -> DiskReading:
    """Switchover (the guest is paused): copy what is still dirty, end the job without pivoting,
    close the connection. Raises when the copy is not complete: the stream must not go on."""
    reading = reading_of(await mirror_job(qmp))
    if reading is None:
        raise DriverError("no disk mirror to complete")
    if not reading.ready or reading.error:
        raise DriverError(f"the disk mirror is {reading.status}: {reading.error or 'not ready'}")
    await run(qmp, "block-job-cancel", {"device": MIRROR_JOB})
    final = await _until_ended(qmp)
    if final is None or final.error:
        why = final.error if final else "its record vanished"
        raise DriverError(f"the disk mirror's last copy failed: {why}")
    await _dismiss(qmp)
    return final


async def drop_mirror(qmp: QMPClient) -> DiskReading | None:
    """Abort: stop copying (a partial copy is the destination's to remove), end the job and
    the connection. The guest's own disk is untouched. Idempotent.

    The connection is yanked (shut down at once) first: over a link that drops packets the
    job's writes in flight would wait for TCP to give up, which takes minutes, and cancelling
    the job waits for them in QEMU's main loop, where its monitor would not answer either.
    Yanked, they fail at once and the job ends."""
    if await _has_node(qmp, TARGET_NODE):
        with contextlib.suppress(DriverError):  # nothing to yank: the connection is closed
            await run(
                qmp, "yank", {"instances": [{"type": "block-node", "node-name": TARGET_NODE}]}
            )
    job = await mirror_job(qmp)
    if job is not None and str(job.get("status")) not in ENDED:
        await run(qmp, "block-job-cancel", {"device": MIRROR_JOB, "force": True})
    final = await _until_ended(qmp)
    await _dismiss(qmp)
    return final
