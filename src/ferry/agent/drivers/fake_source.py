"""The source side of a fake host's migrations: outgoing streams, the disk mirrors that go before
them, their events, and their part of the faults and of the state file (fake.py has the rest of
the driver, fake_migration.py and fake_mirror.py the models).

A stream is its model and when it started (wall clock, so that it survives an agent restart), or
once it finished, its final reading. A local disk's mirror is the same (model, start) pair; it
runs alone first (status `mirroring`), and once it is in sync the next `migrate` starts the RAM
stream beside it: readings are then the stream's with the disk's counters filled in, and the
final reading keeps the counters as they were when the stream completed.

Events: a stream announces itself when it starts (`active`, or `failed` when nobody listens),
when it is cancelled, and when the model says it completes; a mirror (`mirroring`) when it starts,
when the model says it is in sync, and when it fails. The timers move with every tune and every
return of a cut link; a cut link or an agent restart can make one early or missing, which costs
the controller nothing but an early reading or its usual poll.
"""

from __future__ import annotations

import abc
import asyncio
import re
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ferry.agent.drivers.base import (
    Driver,
    DriverError,
    GuestPower,
    GuestSpec,
    GuestStatus,
    MigrationChannel,
    MigrationEvent,
    MigrationParams,
    MigrationProgress,
)
from ferry.agent.drivers.fake_migration import MIB, SimulatedMigration
from ferry.agent.drivers.fake_mirror import (
    SimulatedMirror,
    clear_wire,
    mirror_of,
    mirroring,
    send_copy,
    with_disk,
)
from ferry.agent.storage import DiskStore

# A guest whose process is gone (a CRASHED guest's QEMU still runs: it panicked, as QEMU's
# guest-panicked runstate says, and is treated as a guest here, like the QEMU driver does).
DEAD = (GuestPower.STOPPED,)
HORIZON_S = 3600.0  # how far ahead a stream's completion is looked for, to announce it
IN_PROGRESS = ("setup", "active", "device")
PEER_RESET = "Unable to write to socket: Connection reset by peer"
MIRROR_FAILED = "the disk mirror failed"
# What a mirror whose destination vanished reports (QEMU: its NBD target's writes fail).
MIRROR_LOST = f"{MIRROR_FAILED}: Input/output error (the destination's export is gone)"


def check_id(instance_id: str) -> None:
    """Instance ids are the controller's UUIDs; others are refused, as the QEMU driver does."""
    if not re.fullmatch(r"[0-9a-f-]{8,36}", instance_id):
        raise DriverError(f"invalid instance id {instance_id!r}")


class FakeSource(Driver):
    """Mixed into FakeDriver, which supplies the hooks below and calls `_init_streams`."""

    _guests: dict[str, GuestStatus]
    _specs: dict[str, GuestSpec]
    _targets: set[str]  # incoming migration targets (QEMU: incoming.json)
    _outgoing: dict[str, tuple[SimulatedMigration, float]]  # RAM streams: model, start
    _mirrors: dict[str, tuple[SimulatedMirror, float]]  # local disks' mirrors: model, start
    _ended: dict[str, MigrationProgress]  # the final reading of a finished stream
    _doomed: set[str]  # the next stream fails at once: its peer is gone
    _link_down_since: float | None
    _alarms: dict[str, asyncio.TimerHandle]  # instance id -> its next migration event
    disks_store: DiskStore | None
    _wire: Path | None  # where completed disk copies cross to their destination (fake_mirror.py)

    def _init_streams(self) -> None:
        self._outgoing, self._mirrors, self._ended = {}, {}, {}
        self._doomed, self._alarms = set(), {}
        self._link_down_since = None

    @abc.abstractmethod
    def _set_power(self, instance_id: str, power: GuestPower, detail: str) -> None:
        """The guest's power and detail, saved."""

    @abc.abstractmethod
    def _save(self) -> None: ...

    def _alive(self, instance_id: str) -> bool:
        guest = self._guests.get(instance_id)
        return guest is not None and guest.power not in DEAD

    def _require_source(self, instance_id: str) -> None:
        """The QEMU driver's test before a source-side call: a live guest, not a target."""
        check_id(instance_id)
        if instance_id in self._targets:
            raise DriverError(f"{instance_id} is an incoming migration target on this host")
        if not self._alive(instance_id):
            raise DriverError(f"{instance_id} does not run on this host")

    # -- starting -------------------------------------------------------------------------------

    async def migrate(
        self, instance_id: str, channel: MigrationChannel, params: MigrationParams
    ) -> None:
        self._require_source(instance_id)
        if self._read_outgoing(instance_id).status == "completed":
            raise DriverError(f"{instance_id} was handed over already: finish the source")
        if instance_id in self._outgoing:
            return  # a retry: already sending
        if channel.disk_port is not None and not self._disk_in_sync(instance_id, channel, params):
            return  # the disk goes first; a call once it is in sync starts the RAM
        if self._refused(instance_id, f"Failed to connect to {channel.address}:{channel.port}"):
            return
        spec = self._specs[instance_id]
        model = SimulatedMigration(spec.ram_mb * MIB, spec.dirty_rate_mbps * MIB, params)
        self._outgoing[instance_id] = (model, time.time())
        self._ended.pop(instance_id, None)
        self._save()
        self.emit(MigrationEvent(instance_id, "active", 1))
        self._arm(instance_id)

    def _disk_in_sync(
        self, instance_id: str, channel: MigrationChannel, params: MigrationParams
    ) -> bool:
        """The disk goes first: its mirror started when there is none (or the last one ended),
        True once it is in sync and the RAM may follow."""
        current = self._mirrors.get(instance_id)
        if current is not None:
            model, started = current
            return model.at(self._clock() - started).ready
        spec = self._specs[instance_id]
        if spec.disk is None:
            raise DriverError(f"{spec.name} has no disk to copy")
        address = f"{channel.address}:{channel.disk_port}"
        if self._refused(instance_id, f"{MIRROR_FAILED}: Failed to connect to {address}"):
            return False
        model = mirror_of(spec.disk, spec.disk_write_kibps, params.max_bandwidth_bytes)
        clear_wire(self._wire, instance_id)
        self._mirrors[instance_id] = (model, time.time())
        self._ended.pop(instance_id, None)
        self._save()
        self.emit(MigrationEvent(instance_id, "mirroring"))
        self._arm(instance_id)
        return False

    def _refused(self, instance_id: str, error: str) -> bool:
        """Whether nobody listens any more (a lost peer): the connection is refused, once."""
        if instance_id not in self._doomed:
            return False
        self._doomed.discard(instance_id)
        self._ended[instance_id] = MigrationProgress(status="failed", error=error)
        self._save()
        self.emit(MigrationEvent(instance_id, "failed"))
        return True

    # -- events ---------------------------------------------------------------------------------

    def _arm(self, instance_id: str) -> None:
        """Announce the next change the models foresee (if within HORIZON_S): the stream's
        completion, or while only the disk moves, the mirror getting in sync."""
        self._disarm(instance_id)
        if self.event_sink is None:
            return
        due = self._due(instance_id)
        if due is not None:
            when, event = due
            delay = max(when - time.time(), 0.0)
            self._alarms[instance_id] = asyncio.get_running_loop().call_later(
                delay, self.emit, event
            )

    def _due(self, instance_id: str) -> tuple[float, MigrationEvent] | None:
        if instance_id in self._outgoing:
            model, started = self._outgoing[instance_id]
            end = model.at(HORIZON_S)
            if end.status != "completed" or end.total_time_ms is None:
                return None
            return started + end.total_time_ms / 1000, MigrationEvent(
                instance_id, "completed", end.passes
            )
        if instance_id in self._mirrors:
            disk, started = self._mirrors[instance_id]
            if not self._clock() - started < disk.ready_at <= HORIZON_S:
                return None  # in sync already, or not for long
            return started + disk.ready_at, MigrationEvent(instance_id, "mirroring")
        return None

    def _disarm(self, instance_id: str) -> None:
        alarm = self._alarms.pop(instance_id, None)
        if alarm is not None:
            alarm.cancel()

    # -- reading --------------------------------------------------------------------------------

    async def migration_status(self, instance_id: str) -> MigrationProgress:
        check_id(instance_id)
        if not self._alive(instance_id):
            raise DriverError(f"{instance_id} does not run on this host")
        return self._read_outgoing(instance_id)

    def _clock(self) -> float:
        """Now, for the streams: while the link is cut their time stands still."""
        return self._link_down_since if self._link_down_since is not None else time.time()

    def _read_outgoing(self, instance_id: str) -> MigrationProgress:
        if instance_id in self._ended:
            return self._ended[instance_id]
        mirror = self._mirrors.get(instance_id)
        if instance_id not in self._outgoing:
            if mirror is None:
                return MigrationProgress(status="none")
            disk, disk_started = mirror
            return mirroring(disk.at(self._clock() - disk_started))
        model, started = self._outgoing[instance_id]
        reading = model.at(max(self._clock() - started, 0.0))
        if mirror is not None:  # the disk as it was at the reading's time (a final one: its end)
            disk, disk_started = mirror
            at = started + (reading.total_time_ms or 0) / 1000
            reading = with_disk(reading, disk.at(at - disk_started))
        if reading.finished:
            self._ended[instance_id] = reading
            del self._outgoing[instance_id]
            if self._mirrors.pop(instance_id, None) is not None and reading.status == "completed":
                self._send_copy(instance_id)
            self._set_power(instance_id, GuestPower.PAUSED, "migrated away")
        return reading

    def _send_copy(self, instance_id: str) -> None:
        """The mirror completed with the stream (QEMU: at its switchover): the destination's copy
        now holds what the source's disk does (fake_mirror.py: the copy's content)."""
        if self.disks_store is not None:
            send_copy(self._wire, instance_id, self.disks_store.path(instance_id))

    # -- changing -------------------------------------------------------------------------------

    async def tune_migration(
        self,
        instance_id: str,
        *,
        downtime_limit_ms: int | None = None,
        max_bandwidth_bytes: int | None = None,
        start_postcopy: bool = False,
    ) -> None:
        self._require_source(instance_id)
        self._read_outgoing(instance_id)
        if max_bandwidth_bytes and instance_id in self._mirrors:
            disk, disk_started = self._mirrors[instance_id]
            elapsed = self._clock() - disk_started
            self._mirrors[instance_id] = (disk.tuned(elapsed, max_bandwidth_bytes), disk_started)
            self._save()
            self._arm(instance_id)
        if instance_id not in self._outgoing:
            if start_postcopy:  # QEMU: "Postcopy must be started after migration has been started"
                raise DriverError(f"no migration of {instance_id} in progress")
            return  # QEMU takes the settings for the next stream, which sets its own
        model, started = self._outgoing[instance_id]
        params = replace(
            model.params,
            downtime_limit_ms=downtime_limit_ms or model.params.downtime_limit_ms,
            max_bandwidth_bytes=max_bandwidth_bytes or model.params.max_bandwidth_bytes,
        )
        if start_postcopy and not params.postcopy:
            raise DriverError("post-copy was not enabled for this migration")
        postcopy_at = max(self._clock() - started, 0.0) if start_postcopy else model.postcopy_at
        self._outgoing[instance_id] = (
            replace(model, params=params, postcopy_at=postcopy_at),
            started,
        )
        self._save()
        self._arm(instance_id)

    def _abort_source(self, instance_id: str) -> None:
        self._require_source(instance_id)
        status = self._read_outgoing(instance_id).status
        # QEMU waits a switchover out rather than cancel it, and then it has completed.
        if status in ("completed", "device"):
            raise DriverError(
                f"the migration of {instance_id} completed: the guest runs on the destination"
            )
        if status == "postcopy-active":
            raise DriverError(
                f"{instance_id} is in post-copy: the destination runs it; it can only complete"
            )
        stream = self._outgoing.pop(instance_id, None)
        mirror = self._mirrors.pop(instance_id, None)  # the copy is the destination's to remove
        if stream is not None or mirror is not None:
            self._ended[instance_id] = MigrationProgress(status="cancelled")
            self._disarm(instance_id)
            self.emit(MigrationEvent(instance_id, "cancelled"))
        self._doomed.discard(instance_id)
        self._set_power(instance_id, GuestPower.RUNNING, "")

    # -- faults (see fake.py) -------------------------------------------------------------------

    def _drop_streams(self, instance_id: str) -> None:
        """The guest's process died or left: its stream and its mirror are gone with it."""
        self._outgoing.pop(instance_id, None)
        self._mirrors.pop(instance_id, None)
        self._ended.pop(instance_id, None)
        self._doomed.discard(instance_id)
        self._disarm(instance_id)

    def _lose_peer(self, instance_id: str) -> str:
        """A source's destination vanished: a mirror or stream in progress fails (the guest
        runs on), one not started yet fails when it starts. Returns the status before."""
        status = self._read_outgoing(instance_id).status
        if status == "mirroring":
            disk, disk_started = self._mirrors.pop(instance_id)
            counters = replace(disk.at(self._clock() - disk_started), ready=False)
            failed = MigrationProgress(status="failed", error=MIRROR_LOST)
            self._ended[instance_id] = with_disk(failed, replace(counters, throughput_mbps=0.0))
            self._disarm(instance_id)
            self._set_power(instance_id, GuestPower.RUNNING, "")
            self.emit(MigrationEvent(instance_id, "mirroring"))  # QEMU: BLOCK_JOB_ERROR
        elif status in IN_PROGRESS:
            del self._outgoing[instance_id]
            self._mirrors.pop(instance_id, None)
            self._ended[instance_id] = MigrationProgress(status="failed", error=PEER_RESET)
            self._disarm(instance_id)
            self._set_power(instance_id, GuestPower.RUNNING, "")
        elif status != "completed" and not status.startswith("postcopy"):
            self._doomed.add(instance_id)  # until the stream is tried, or the source aborts
            self._save()
        return status

    def set_link(self, *, up: bool) -> None:
        """Cut the host's migration link, or bring it back: while it is cut no stream or
        mirror moves a byte (their clocks stand still); then they go on where they stopped."""
        now = time.time()
        if up and self._link_down_since is not None:
            cut = self._link_down_since
            for instance_id, (stream, started) in list(self._outgoing.items()):
                self._outgoing[instance_id] = (stream, started + now - max(cut, started))
            for instance_id, (disk, started) in list(self._mirrors.items()):
                self._mirrors[instance_id] = (disk, started + now - max(cut, started))
            self._link_down_since = None
            self._save()
            for instance_id in {*self._outgoing, *self._mirrors}:
                self._arm(instance_id)
        elif not up and self._link_down_since is None:
            self._link_down_since = now
            self._save()

    @property
    def link_up(self) -> bool:
        return self._link_down_since is None

    # -- state file -----------------------------------------------------------------------------

    def _load_streams(self, instance_id: str, raw: dict[str, Any]) -> None:
        """The stream part of a guest's entry in the state file (see `_saved_streams`)."""
        if raw.get("doomed", False):
            self._doomed.add(instance_id)
        if (outgoing := raw.get("outgoing")) is not None:
            model = dict(outgoing["model"])
            params = MigrationParams(**model.pop("params"))
            stream = SimulatedMigration(**model, params=params)
            self._outgoing[instance_id] = (stream, outgoing["started"])
        if (mirror := raw.get("mirror")) is not None:
            self._mirrors[instance_id] = (
                SimulatedMirror.from_dict(mirror["model"]),
                mirror["started"],
            )
        if (ended := raw.get("ended")) is not None:
            self._ended[instance_id] = MigrationProgress(**ended)

    def _saved_streams(self, instance_id: str) -> dict[str, Any]:
        entry: dict[str, Any] = {}
        if instance_id in self._doomed:
            entry["doomed"] = True
        if instance_id in self._outgoing:
            model, started = self._outgoing[instance_id]
            entry["outgoing"] = {"model": asdict(model), "started": started}
        if instance_id in self._mirrors:
            disk, disk_started = self._mirrors[instance_id]
            entry["mirror"] = {"model": asdict(disk), "started": disk_started}
        if instance_id in self._ended:
            entry["ended"] = asdict(self._ended[instance_id])
        return entry
