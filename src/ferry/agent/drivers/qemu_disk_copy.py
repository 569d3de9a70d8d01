"""The disk half of a QEMU live migration with a local disk: the driver's bookkeeping around the
QMP steps of qemu_mirror.py.

The source's run dir holds `mirror.json` from the mirror's start until the guest leaves or the
migration is aborted: it says that this guest's migration copies its disk (so a restarted agent
still completes the switchover) and keeps the mirror's final counters and error once the job's
record is gone. The destination's `incoming.json` names the `DiskCopy` it exports, so that
finishing stops the export and an abort removes the partial copy.

The switchover is the source agent's own duty, not the controller's: the guest is paused in
`pre-switchover` until its mirror completes, so the driver acts on the MIGRATION event at once
(and on any reading that finds the guest there: an agent restarted mid-switchover).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from ferry.agent.drivers import nbd_tunnel as tunnel
from ferry.agent.drivers import qemu_mirror as mirror
from ferry.agent.drivers.base import (
    DiskCopy,
    Driver,
    DriverError,
    MigrationChannel,
    MigrationEvent,
    MigrationParams,
    MigrationProgress,
)
from ferry.agent.drivers.qemu_stream import INCOMING_FILE, outgoing_status, run
from ferry.agent.storage import DiskStore

log = logging.getLogger(__name__)


class QemuDiskCopy(Driver):
    """Mixed into QemuMigration; QemuDriver supplies the hooks and the two maps."""

    disks_store: DiskStore | None
    _switching: dict[str, asyncio.Task[None]]  # instance id -> its switchover in progress
    _disk_reads: dict[str, tuple[int, float]]  # instance id -> (copied bytes, when) last read

    @abc.abstractmethod
    def _dir(self, instance_id: str) -> Path: ...

    @abc.abstractmethod
    def _lock(self, instance_id: str) -> asyncio.Lock: ...

    @abc.abstractmethod
    def _session(self, instance_id: str) -> AbstractAsyncContextManager[QMPClient]: ...

    # -- markers ----------------------------------------------------------------------------

    def _mirror_marker(self, instance_id: str) -> dict[str, Any] | None:
        try:
            raw = json.loads((self._dir(instance_id) / mirror.MIRROR_FILE).read_text())
        except (OSError, ValueError):
            return None
        return raw if isinstance(raw, dict) else None

    def _write_mirror(self, instance_id: str, marker: Mapping[str, Any]) -> None:
        path = self._dir(instance_id) / mirror.MIRROR_FILE
        temp = path.with_suffix(".new")
        temp.write_text(json.dumps(dict(marker)))
        temp.replace(path)

    def _drop_marker(self, instance_id: str) -> None:
        (self._dir(instance_id) / mirror.MIRROR_FILE).unlink(missing_ok=True)
        self._disk_reads.pop(instance_id, None)

    def _incoming_copy(self, instance_id: str) -> DiskCopy | None:
        """The disk copy a migration target here exports, from its incoming marker."""
        try:
            raw = json.loads((self._dir(instance_id) / INCOMING_FILE).read_text())
        except (OSError, ValueError):
            return None
        disk = raw.get("disk") if isinstance(raw, dict) else None
        return DiskCopy(**disk) if isinstance(disk, dict) else None

    def _remove_local_disk(self, instance_id: str) -> None:
        """A local disk's copy that is not (or no longer) the guest's: a target's partial copy,
        or a source's disk once the destination runs on its own."""
        if self.disks_store is not None and not self.disks_store.shared:
            self.disks_store.remove(instance_id)

    # -- source: the mirror ---------------------------------------------------------------------

    async def _disk_in_sync(
        self,
        qmp: QMPClient,
        instance_id: str,
        creds: Path,
        channel: MigrationChannel,
        params: MigrationParams,
    ) -> bool:
        """The disk goes first: its mirror started when there is none (or the last one ended),
        True once it is in sync and the RAM may follow."""
        reading = mirror.reading_of(await mirror.mirror_job(qmp))
        if reading is not None and reading.status not in mirror.ENDED:
            return reading.ready
        if reading is not None:
            await mirror.drop_mirror(qmp)
        self._write_mirror(instance_id, {"started": time.time()})
        assert channel.disk_port is not None
        socket = await tunnel.start_connector(
            self._dir(instance_id), creds, channel.address, channel.disk_port, channel.tls_hostname
        )
        await mirror.start_mirror(qmp, creds, socket, channel, params)
        return False

    async def _with_disk(
        self, qmp: QMPClient, instance_id: str, progress: MigrationProgress
    ) -> MigrationProgress:
        """The RAM stream's reading with the disk's beside it (a guest whose migration copies
        its disk); while only the disk moves the status is `mirroring`, and a mirror that
        failed fails the migration."""
        marker = self._mirror_marker(instance_id)
        if marker is None:
            return progress
        reading = mirror.reading_of(await mirror.mirror_job(qmp))
        if reading is None:
            total, copied = int(marker.get("total", 0)), int(marker.get("copied", 0))
            ready = bool(marker.get("done", False))
        else:
            total, copied, ready = reading.total_bytes, reading.copied_bytes, reading.ready
        progress = replace(
            progress,
            disk_total_bytes=total,
            disk_copied_bytes=copied,
            disk_ready=ready,
            disk_throughput_mbps=self._disk_rate(instance_id, copied),
        )
        error = (reading.error if reading else None) or marker.get("error")
        if progress.status == "completed":
            return progress
        if error:
            return replace(progress, status="failed", error=f"the disk mirror failed: {error}")
        if reading is not None and progress.status in ("none", "cancelled", "failed"):
            if reading.status in mirror.ENDED:
                return replace(progress, status="failed", error="the disk mirror ended early")
            return replace(progress, status="mirroring") if progress.status == "none" else progress
        return progress

    def _disk_rate(self, instance_id: str, copied: int) -> float:
        """Mbit/s since the last reading of this guest's mirror."""
        now = time.monotonic()
        before = self._disk_reads.get(instance_id)
        self._disk_reads[instance_id] = (copied, now)
        if before is None or now <= before[1] or copied < before[0]:
            return 0.0
        return (copied - before[0]) * 8 / (now - before[1]) / 1e6

    # -- source: the switchover -------------------------------------------------------------

    def _heard(self, event: MigrationEvent) -> None:
        """An event of a guest here: forwarded; a source paused before its switchover goes on."""
        self.emit(event)
        if event.status == "pre-switchover":
            self._switch_soon(event.instance_id)

    def _switch_soon(self, instance_id: str) -> None:
        task = self._switching.get(instance_id)
        if task is None or task.done():
            self._switching[instance_id] = asyncio.create_task(
                self._switchover(instance_id), name=f"switchover-{instance_id[:8]}"
            )

    async def _switchover(self, instance_id: str) -> None:
        """Complete the mirror while the guest is paused, then let the stream go on; if the
        mirror cannot complete, cancel the stream: the source resumes on its own disk."""
        try:
            async with self._lock(instance_id):
                marker = self._mirror_marker(instance_id)
                if marker is None:
                    return
                async with self._session(instance_id) as qmp:
                    if outgoing_status(await run(qmp, "query-migrate")) != "pre-switchover":
                        return
                    await self._complete(qmp, instance_id, marker)
        except DriverError as exc:
            log.error("switchover of %s: %s", instance_id, exc)
        finally:
            self._switching.pop(instance_id, None)

    async def _complete(self, qmp: QMPClient, instance_id: str, marker: dict[str, Any]) -> None:
        try:
            final = await mirror.complete_mirror(qmp)
        except DriverError as exc:
            log.error("%s: %s; cancelling its migration", instance_id, exc)
            self._write_mirror(instance_id, {**marker, "error": str(exc)})
            with contextlib.suppress(DriverError):
                await run(qmp, "migrate_cancel")
            return
        done = {"total": final.total_bytes, "copied": final.copied_bytes, "done": True}
        self._write_mirror(instance_id, {**marker, **done})
        await tunnel.stop(self._dir(instance_id), tunnel.CONNECTOR_PID)
        await run(qmp, "migrate-continue", {"state": "pre-switchover"})

    async def _close_switchovers(self) -> None:
        tasks = list(self._switching.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
