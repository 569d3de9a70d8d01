"""Live migration for the QEMU driver, over QEMU's native TLS, in the Driver handshake's shape.

Destination (`prepare_incoming`): the guest's own command line (same machine, CPU, MACs, devices)
plus `-incoming defer`, server credentials and an authz list admitting only cluster hosts; taps
first; then capabilities, tls-creds/tls-authz and `migrate-incoming` on the port. Until
`finish_destination` the run dir holds an `incoming.json` marker: `list()` reports the guest as
INCOMING, and aborts tell a migration target from a guest that lives here.

Source (`migrate`): client credentials (object-add, re-read from disk each time), the same
capabilities, tls-creds/tls-hostname, bandwidth and downtime, then `migrate`. There is no plaintext
path: without credentials every method that would open a stream refuses.

Both ends enable `return-path`: the destination confirms that it loaded the state, and only then
does the source report `completed`. Without it a destination that fails to load leaves a source
that believes it is done (paused for good) and a lost guest; with it the source fails and resumes.

Once the source reports `completed` the guest runs on the destination (QEMU starts it there by
itself: no -S), so neither end aborts any more: the only way is forward. Post-copy is the same
from its switch on. A switchover in progress (status `device`) is waited out, not cancelled, so
that a cancel cannot race a destination that already started the guest.

Both ends listen to the guest's events (qemu_events.py) from their first step on: each MIGRATION
and MIGRATION_PASS goes to the driver's event sink, and the waits for a stream to settle or a
guest to arrive wake on the next event instead of polling QMP every 50 ms (they still read the
state with query-migrate and query-status, and poll every `EVENT_FALLBACK` seconds when no event
comes, or every `POLL` seconds when the guest has no event monitor).
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ferry.agent.drivers import nbd_tunnel as tunnel
from ferry.agent.drivers import qemu_mirror as mirror
from ferry.agent.drivers.base import (
    DiskCopy,
    DriverError,
    GuestPower,
    GuestSpec,
    GuestStatus,
    MigrationChannel,
    MigrationParams,
    MigrationProgress,
)
from ferry.agent.drivers.qemu_argv import EVENTS_SOCK, QemuConfig, incoming_argv
from ferry.agent.drivers.qemu_disk_copy import QemuDiskCopy
from ferry.agent.drivers.qemu_events import EventWatch
from ferry.agent.drivers.qemu_stream import (
    ANNOUNCE,
    ARRIVING,
    CANCELLABLE,
    EVENT_FALLBACK,
    INCOMING_FILE,
    POLL,
    POSTCOPY,
    SENDING,
    SETTLE_TIMEOUT,
    TLS_DIR,
    WATCH_RETRY,
    build_creds_dir,
    listen,
    outgoing_status,
    progress_from,
    run,
    send,
    tcp_uri,
)
from ferry.agent.storage import check_incoming

log = logging.getLogger(__name__)


class QemuMigration(QemuDiskCopy):
    """The migration half of the QEMU driver; QemuDriver supplies the hooks below."""

    config: QemuConfig
    _creds: Path | None = None
    _creds_lock: asyncio.Lock | None = None
    _watches: dict[str, EventWatch]  # instance id -> its event monitor, while QEMU runs
    _unwatched: dict[str, float]  # instance id -> when its event monitor last did not answer
    _watch_locks: dict[str, asyncio.Lock]  # one start at a time: the monitor takes one client

    # -- hooks (QemuDriver; _dir, _lock and _session are QemuDiskCopy's) ----------------------

    @abc.abstractmethod
    def _pid(self, instance_id: str) -> int | None: ...

    @abc.abstractmethod
    async def _status(self, instance_id: str) -> GuestStatus | None: ...

    @abc.abstractmethod
    async def _start_guest(
        self, spec: GuestSpec, extra: Sequence[str] = (), marker: str | None = None
    ) -> GuestStatus: ...

    @abc.abstractmethod
    async def _remove(self, instance_id: str) -> None: ...

    # -- helpers --------------------------------------------------------------------------------

    async def _tls(self) -> Path:
        """The QEMU credentials directory <run_dir>/tls, built once per agent process (under a
        lock: two migrations prepared at once must not rebuild it under each other)."""
        if self._creds_lock is None:
            self._creds_lock = asyncio.Lock()
        async with self._creds_lock:
            if self._creds is None:
                if self.config.tls is None:
                    raise DriverError("this host has no TLS credentials: it cannot migrate guests")
                dest = self.config.run_dir / TLS_DIR
                self._creds = await asyncio.to_thread(build_creds_dir, self.config.tls, dest)
        return self._creds

    async def _watch(self, instance_id: str) -> EventWatch | None:
        """The guest's event watch, started if it is not running (first migration step here,
        or an agent restarted mid-migration); None when the guest has no event monitor."""
        async with self._watch_locks.setdefault(instance_id, asyncio.Lock()):
            return await self._start_watch(instance_id)

    async def _start_watch(self, instance_id: str) -> EventWatch | None:
        watch = self._watches.get(instance_id)
        if watch is not None and watch.alive:
            return watch
        sock = self._dir(instance_id) / EVENTS_SOCK
        now = asyncio.get_running_loop().time()
        if not sock.exists() or now - self._unwatched.get(instance_id, -WATCH_RETRY) < WATCH_RETRY:
            return None  # a monitor that did not answer must not slow every reading down
        watch = EventWatch(instance_id, sock, self._heard)
        try:
            await watch.start()
        except DriverError as exc:
            log.warning("no QEMU events from %s (polling it): %s", instance_id, exc)
            self._unwatched[instance_id] = now
            return None
        self._unwatched.pop(instance_id, None)
        self._watches[instance_id] = watch
        return watch

    async def _unwatch(self, instance_id: str) -> None:
        self._unwatched.pop(instance_id, None)
        self._watch_locks.pop(instance_id, None)
        watch = self._watches.pop(instance_id, None)
        if watch is not None:
            await watch.close()

    async def _until_changed(self, watch: EventWatch | None, seen: asyncio.Event | None) -> None:
        """Until the guest's next event (or the fallback poll), or POLL without a watch."""
        if watch is not None and seen is not None and watch.alive:
            await watch.changed.wait(seen, EVENT_FALLBACK)
        else:
            await asyncio.sleep(POLL)

    def _incoming(self, instance_id: str) -> bool:
        return (self._dir(instance_id) / INCOMING_FILE).exists()

    async def _qmp(
        self, instance_id: str, command: str, args: Mapping[str, object] | None = None
    ) -> dict[str, Any]:
        async with self._session(instance_id) as qmp:
            result = await run(qmp, command, args)
        return result if isinstance(result, dict) else {}

    async def _runstate(self, instance_id: str) -> str:
        return str((await self._qmp(instance_id, "query-status")).get("status"))

    async def _outgoing(self, instance_id: str) -> str:
        return outgoing_status(await self._qmp(instance_id, "query-migrate"))

    def _require_source(self, instance_id: str) -> None:
        if self._incoming(instance_id):
            raise DriverError(f"{instance_id} is an incoming migration target on this host")
        if self._pid(instance_id) is None:
            raise DriverError(f"{instance_id} does not run on this host")

    # -- destination ----------------------------------------------------------------------------

    async def prepare_incoming(
        self,
        spec: GuestSpec,
        port: int,
        params: MigrationParams,
        disk: DiskCopy | None = None,
    ) -> GuestStatus:
        async with self._lock(spec.id):
            creds = await self._tls()
            check_incoming(self.disks_store, spec, disk)
            current = await self._status(spec.id)
            if current is not None and current.power is not GuestPower.STOPPED:
                if self._incoming(spec.id):
                    return current  # a retry: already listening
                raise DriverError(f"{spec.name} already runs on this host; it cannot move here")
            marker = {"port": port, "params": asdict(params), "disk": disk and asdict(disk)}
            try:
                await self._start_guest(spec, incoming_argv(creds), json.dumps(marker))
                await self._watch(spec.id)
                async with self._session(spec.id) as qmp:
                    await listen(qmp, params, tcp_uri(self.config.migration_listen, port))
                    if disk is not None:
                        socket = self._dir(spec.id) / tunnel.EXPORT_SOCKET
                        await mirror.export(qmp, socket, disk.source_host)
                if disk is not None:
                    await self._open_disk_port(spec.id, creds, disk)
            except BaseException:
                await self._remove_target(spec.id, disk)
                raise
            status = await self._status(spec.id)
            if status is None or status.pid is None:
                await self._remove_target(spec.id, disk)
                raise DriverError(f"the incoming QEMU of {spec.name} exited right after starting")
            return status

    async def _open_disk_port(self, instance_id: str, creds: Path, disk: DiskCopy) -> None:
        """The disk port: TLS from the first byte, for the source host only, to the export."""
        listen, run = self.config.migration_listen, self._dir(instance_id)
        await tunnel.start_listener(run, creds, listen, disk.port, disk.source_host)

    async def _remove_target(self, instance_id: str, disk: DiskCopy | None) -> None:
        await self._remove(instance_id)
        if disk is not None:
            self._remove_local_disk(instance_id)

    async def finish_destination(self, instance_id: str) -> GuestStatus:
        async with self._lock(instance_id):
            if not self._incoming(instance_id):
                status = await self._status(instance_id)
                if status is not None and status.power is GuestPower.RUNNING:
                    return status  # finished before
                raise DriverError(f"no incoming migration of {instance_id} on this host")
            await self._await_arrival(instance_id)
            if self._incoming_copy(instance_id) is not None:
                await tunnel.stop(self._dir(instance_id), tunnel.LISTENER_PID)
                async with self._session(instance_id) as qmp:
                    await mirror.stop_export(qmp)
            await self._qmp(instance_id, "announce-self", ANNOUNCE)
            (self._dir(instance_id) / INCOMING_FILE).unlink()
            status = await self._status(instance_id)
            if status is None:
                raise DriverError(f"{instance_id} vanished right after its migration")
            return status

    async def _await_arrival(self, instance_id: str) -> None:
        """Until the incoming migration completed and QEMU left the incoming run states."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT
        watch = await self._watch(instance_id)
        while True:
            seen = watch.changed.current() if watch else None
            if self._pid(instance_id) is None:
                raise DriverError(f"the incoming QEMU of {instance_id} exited: migration failed")
            info = await self._qmp(instance_id, "query-migrate")
            status, state = str(info.get("status", "none")), await self._runstate(instance_id)
            if status == "failed":
                raise DriverError(f"incoming migration of {instance_id} failed")
            if status == "completed" and state not in ARRIVING:
                return
            if loop.time() > deadline:
                raise DriverError(
                    f"incoming migration of {instance_id} is still {status} ({state})"
                    f" after {SETTLE_TIMEOUT:g} s"
                )
            await self._until_changed(watch, seen)

    # -- source ---------------------------------------------------------------------------------

    async def migrate(
        self, instance_id: str, channel: MigrationChannel, params: MigrationParams
    ) -> None:
        async with self._lock(instance_id):
            creds = await self._tls()
            self._require_source(instance_id)
            await self._watch(instance_id)  # before the stream: its first event is heard
            async with self._session(instance_id) as qmp:
                status = outgoing_status(await run(qmp, "query-migrate"))
                if status in SENDING or status in POSTCOPY:
                    return  # a retry: already sending
                if str((await run(qmp, "query-status")).get("status")) == "postmigrate":
                    raise DriverError(f"{instance_id} was handed over already: finish the source")
                if channel.disk_port is not None and not await self._disk_in_sync(
                    qmp, instance_id, creds, channel, params
                ):
                    return  # the disk goes first; a call once it is in sync starts the RAM
                await send(qmp, creds, channel, params)

    async def migration_status(self, instance_id: str) -> MigrationProgress:
        if self._pid(instance_id) is None:
            raise DriverError(f"{instance_id} does not run on this host")
        await self._watch(instance_id)  # an agent restarted mid-migration listens again
        async with self._session(instance_id) as qmp:
            info = await run(qmp, "query-migrate")
            progress = await self._with_disk(qmp, instance_id, progress_from(info))
        if progress.status == "pre-switchover":
            self._switch_soon(instance_id)  # its event came before this agent listened
        return progress

    async def tune_migration(
        self,
        instance_id: str,
        *,
        downtime_limit_ms: int | None = None,
        max_bandwidth_bytes: int | None = None,
        start_postcopy: bool = False,
    ) -> None:
        self._require_source(instance_id)
        settings: dict[str, object] = {}
        if downtime_limit_ms is not None:
            settings["downtime-limit"] = downtime_limit_ms
        if max_bandwidth_bytes is not None:
            settings["max-bandwidth"] = max_bandwidth_bytes
        async with self._session(instance_id) as qmp:
            if settings:
                await run(qmp, "migrate-set-parameters", settings)
            if max_bandwidth_bytes is not None and self._mirror_marker(instance_id) is not None:
                await mirror.set_speed(qmp, max_bandwidth_bytes)
            if start_postcopy:
                await run(qmp, "migrate-start-postcopy")

    async def finish_source(self, instance_id: str) -> None:
        async with self._lock(instance_id):
            if not self._dir(instance_id).exists():
                self._remove_local_disk(instance_id)  # finished before (the disk last)
                return
            if self._incoming(instance_id):
                raise DriverError(f"{instance_id} is an incoming migration target on this host")
            if self._pid(instance_id) is not None:
                state = await self._runstate(instance_id)
                if state != "postmigrate":
                    raise DriverError(
                        f"{instance_id} is {state} here, not handed over: not removing it"
                    )
            await self._remove(instance_id)
            self._remove_local_disk(instance_id)  # the destination runs on its own copy

    # -- abort ----------------------------------------------------------------------------------

    async def abort_migration(self, instance_id: str, *, source: bool) -> None:
        async with self._lock(instance_id):
            if source:
                await self._abort_source(instance_id)
            else:
                await self._abort_destination(instance_id)

    async def _abort_source(self, instance_id: str) -> None:
        self._require_source(instance_id)
        status = await self._outgoing(instance_id)
        if status in CANCELLABLE:
            await self._qmp(instance_id, "migrate_cancel")
        status = await self._settle(instance_id)
        if status in POSTCOPY:
            raise DriverError(
                f"{instance_id} is in post-copy: the destination runs it; it can only complete"
            )
        if status == "completed":
            raise DriverError(
                f"the migration of {instance_id} completed: the guest runs on the destination"
            )
        if self._mirror_marker(instance_id) is not None:
            # The tunnel goes first: the mirror's connection is then closed under QEMU by the
            # kernel, so its requests in flight fail at once whatever the link does.
            await tunnel.stop(self._dir(instance_id), tunnel.CONNECTOR_PID)
            async with self._session(instance_id) as qmp:
                await mirror.drop_mirror(qmp)
            self._drop_marker(instance_id)
        if await self._runstate(instance_id) in ("paused", "postmigrate"):
            await self._qmp(instance_id, "cont")

    async def _settle(self, instance_id: str) -> str:
        """Wait while the stream is still being sent or cancelled; the final outgoing status."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT
        watch = await self._watch(instance_id)
        while True:
            seen = watch.changed.current() if watch else None
            if (status := await self._outgoing(instance_id)) not in SENDING:
                return status
            if loop.time() > deadline:
                raise DriverError(f"the migration of {instance_id} is still {status}")
            await self._until_changed(watch, seen)

    async def _abort_destination(self, instance_id: str) -> None:
        rundir = self._dir(instance_id)
        if not rundir.exists():
            return  # aborted before, or never prepared
        if (rundir / "spec.json").exists() and not self._incoming(instance_id):
            raise DriverError(f"{instance_id} runs on this host as a guest, not as a target")
        if self._pid(instance_id) is not None:
            info = await self._qmp(instance_id, "query-migrate")
            if info.get("status") == "completed":
                raise DriverError(
                    f"the migration of {instance_id} completed: the guest runs here now"
                )
        await self._remove_target(instance_id, self._incoming_copy(instance_id))
