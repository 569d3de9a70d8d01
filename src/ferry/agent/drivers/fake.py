"""The fake driver: a simulated host, no processes. It keeps the contract of `Driver` exactly
(idempotent spawn and destroy, re-attach after an agent restart through its state file), so
tests and cluster-scale simulations exercise the same agent and controller code as real hosts.

State can live in a JSON file so that an agent restart finds its "running" guests again, like
the QEMU driver finds its processes, and their outgoing migrations too: a QEMU process keeps
migrating while its agent is down, and a restarted agent reads where it got (query-migrate).

The migration calls refuse what the QEMU driver refuses, so the controller meets the same answers:
no progress for a guest that is not here, no abort of a source that handed over (or is in
post-copy), no removal of a source that was not handed over, no abort of a destination that runs
the guest as its own or whose stream completed (tests/contract runs the same tests against
both drivers). A migration target carries a marker until `finish_destination`, like the
QEMU driver's `incoming.json`, so a target whose process died is still told from a guest.

Fault hooks (fake_faults.py serves them on the agent API of a fake host only) make happen what
happens to real hosts, with the answers the QEMU driver then gives:

- `crash`: the guest's QEMU process dies. The guest is listed `stopped` (its run directory
  stays), its outgoing stream is gone with it (no progress: "does not run on this host"), a
  source can be removed, a dead target can be aborted, a stopped guest can be replaced by an
  incoming target or started again.
- `peer_lost`: the other end of this guest's migration vanished (its QEMU died). A source's
  stream in progress fails and the guest keeps running (QEMU resumes it); a stream not started
  yet fails as soon as it starts (connection refused). A target waiting for a stream exits, as a
  failed incoming migration ends the destination QEMU in 7.2. A handed-over source and a guest
  that finished arriving are not affected.
- `arrive`: the stream into this target completed, so the guest runs here, which its report
  says as the QEMU driver's does ("migration target (running)" rather than "(inmigrate)").
  The fake learns of it only through this hook: its targets otherwise wait until
  finish-destination, so a controller that cannot hear the source waits rather than concludes.
- `set_link(up=False)`: the host's migration link is cut. Outgoing streams stay `active` but no
  byte moves (a TCP stream over a dead link stalls; QEMU does not give up by itself), so the
  controller's no-progress timeout decides; once the link is up again the streams go on where
  they stopped.

Events: like QEMU's, a stream announces itself to the driver's event sink when it starts
(`active`, or `failed` when nobody listens), when it is cancelled, and when the model says it
completes (a timer, moved by every tune; a cut link or an agent restart can make it early or
missing, which costs the controller nothing but an early reading or its usual poll).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ferry.agent.drivers.base import (
    DiskCopy,
    DiskInventory,
    Driver,
    DriverError,
    GuestPower,
    GuestSpec,
    GuestStatus,
    HostFacts,
    MigrationChannel,
    MigrationEvent,
    MigrationParams,
    MigrationProgress,
)
from ferry.agent.drivers.fake_migration import MIB, SimulatedMigration
from ferry.agent.images import ImageFetcher
from ferry.agent.storage import DiskStore, attach, check_incoming

# A guest whose process is gone (a CRASHED guest's QEMU still runs: it panicked, as QEMU's
# guest-panicked runstate says, and is treated as a guest here, like the QEMU driver does).
DEAD = (GuestPower.STOPPED,)
HORIZON_S = 3600.0  # how far ahead a stream's completion is looked for, to announce it
IN_PROGRESS = ("setup", "active", "device")
# How the QEMU driver describes a migration target: "migration target (<QEMU runstate>)"; a
# target whose stream completed runs the guest already (QEMU starts it by itself).
WAITING = "migration target (inmigrate)"
ARRIVED = "migration target (running)"


@dataclass(frozen=True)
class Crash:
    """What a crash cut short: whether the guest was a migration target, and the status of its
    outgoing stream at that moment (`none` without one)."""

    target: bool
    stream: str


def _check_id(instance_id: str) -> None:
    """Instance ids are the controller's UUIDs; others are refused, as the QEMU driver does."""
    if not re.fullmatch(r"[0-9a-f-]{8,36}", instance_id):
        raise DriverError(f"invalid instance id {instance_id!r}")


class FakeDriver(Driver):
    name = "fake"

    def __init__(
        self,
        facts: HostFacts,
        state_file: Path | None = None,
        boot_seconds: float = 0.0,
        *,
        disks: DiskStore | None = None,
        images: ImageFetcher | None = None,
    ) -> None:
        self._facts = facts
        self.disks_store = disks
        self.images = images
        self._state_file = state_file
        self._boot_seconds = boot_seconds
        self._guests: dict[str, GuestStatus] = {}
        self._specs: dict[str, GuestSpec] = {}
        self._targets: set[str] = set()  # incoming migration targets (QEMU: incoming.json)
        # Outgoing migrations: the model and when it started (wall clock, so that it survives a
        # restart), or a final reading.
        self._outgoing: dict[str, tuple[SimulatedMigration, float]] = {}
        self._ended: dict[str, MigrationProgress] = {}
        self._doomed: set[str] = set()  # the next stream fails at once: its peer is gone
        self._link_down_since: float | None = None
        self._alarms: dict[str, asyncio.TimerHandle] = {}  # instance id -> its completion event
        if state_file is not None and state_file.exists():
            raw = json.loads(state_file.read_text())
            if isinstance(raw, list):  # the format before the link state was kept
                raw = {"guests": raw}
            self._link_down_since = raw.get("link_down_since")
            for guest in raw["guests"]:
                self._load(guest)

    def _load(self, raw: dict[str, Any]) -> None:
        spec = raw.pop("spec")
        outgoing, ended = raw.pop("outgoing", None), raw.pop("ended", None)
        target, doomed = raw.pop("target", False), raw.pop("doomed", False)
        status = GuestStatus(**{**raw, "power": GuestPower(raw["power"])})
        self._guests[status.id] = status
        self._specs[status.id] = GuestSpec.from_dict(spec)
        if target or status.power is GuestPower.INCOMING:  # older files: the power said so
            self._targets.add(status.id)
        if doomed:
            self._doomed.add(status.id)
        if outgoing is not None:
            model = outgoing["model"]
            params = MigrationParams(**model.pop("params"))
            self._outgoing[status.id] = (
                SimulatedMigration(**model, params=params),
                outgoing["started"],
            )
        if ended is not None:
            self._ended[status.id] = MigrationProgress(**ended)

    async def disks(self) -> DiskInventory | None:
        return await asyncio.to_thread(self.disks_store.inventory) if self.disks_store else None

    async def facts(self) -> HostFacts:
        return self._facts

    async def spawn(self, spec: GuestSpec) -> GuestStatus:
        _check_id(spec.id)
        return await self._start(spec, incoming=False)

    async def _start(self, spec: GuestSpec, *, incoming: bool) -> GuestStatus:
        existing = self._guests.get(spec.id)
        if existing is not None and existing.power not in DEAD:
            return existing
        await attach(self.disks_store, self.images, spec, incoming=incoming)
        used = sum(s.ram_mb for i, s in self._specs.items() if i != spec.id)
        if used + spec.ram_mb > self._facts.ram_mb:
            raise DriverError(
                f"cannot start {spec.name}: {spec.ram_mb} MiB requested, "
                f"{self._facts.ram_mb - used} MiB free on this simulated host"
            )
        if self._boot_seconds:
            await asyncio.sleep(self._boot_seconds)
        self._forget(spec.id)  # a stopped guest starts afresh (QEMU: a new run directory)
        status = GuestStatus(
            spec.id,
            spec.name,
            GuestPower.RUNNING,
            taps=[f"fake-{spec.id[:8]}-{i}" for i in range(len(spec.ports))],
        )
        self._guests[spec.id] = status
        self._specs[spec.id] = spec
        self._save()
        return status

    async def destroy(self, instance_id: str) -> None:
        """The instance is deleted: its guest and its disk go."""
        _check_id(instance_id)
        self._drop(instance_id)
        if self.disks_store is not None:
            self.disks_store.remove(instance_id)

    def _drop(self, instance_id: str) -> None:
        """The guest goes from this host; its disk stays (a migration's end, not a delete)."""
        self._forget(instance_id)
        self._save()

    def _forget(self, instance_id: str) -> None:
        self._guests.pop(instance_id, None)
        self._specs.pop(instance_id, None)
        self._targets.discard(instance_id)
        self._outgoing.pop(instance_id, None)
        self._ended.pop(instance_id, None)
        self._doomed.discard(instance_id)
        self._disarm(instance_id)

    async def list(self) -> list[GuestStatus]:
        for instance_id in list(self._outgoing):
            self._read_outgoing(instance_id)  # a finished stream pauses its source
        return sorted(self._guests.values(), key=lambda g: g.name)

    # -- live migration: see fake_migration.py for the model --------------------------------

    async def prepare_incoming(
        self,
        spec: GuestSpec,
        port: int,
        params: MigrationParams,
        disk: DiskCopy | None = None,
    ) -> GuestStatus:
        _check_id(spec.id)
        check_incoming(self.disks_store, spec, disk)
        existing = self._guests.get(spec.id)
        if existing is not None and existing.power not in DEAD:
            if spec.id in self._targets:
                return existing
            raise DriverError(f"{spec.name} already runs on this host; it cannot move here")
        status = await self._start(spec, incoming=True)
        status.power = GuestPower.INCOMING
        status.detail = WAITING  # QEMU's runstate of a target, as the QEMU driver reports it
        self._targets.add(spec.id)
        self._save()
        return status

    async def migrate(
        self, instance_id: str, channel: MigrationChannel, params: MigrationParams
    ) -> None:
        self._require_source(instance_id)
        if self._read_outgoing(instance_id).status == "completed":
            raise DriverError(f"{instance_id} was handed over already: finish the source")
        if instance_id in self._outgoing:
            return  # a retry: already sending
        spec = self._specs[instance_id]
        if instance_id in self._doomed:  # nobody listens any more: the connection is refused
            self._doomed.discard(instance_id)
            self._ended[instance_id] = MigrationProgress(
                status="failed", error=f"Failed to connect to {channel.address}:{channel.port}"
            )
            self._save()
            self.emit(MigrationEvent(instance_id, "failed"))
            return
        model = SimulatedMigration(spec.ram_mb * MIB, spec.dirty_rate_mbps * MIB, params)
        self._outgoing[instance_id] = (model, time.time())
        self._ended.pop(instance_id, None)
        self._save()
        self.emit(MigrationEvent(instance_id, "active", 1))
        self._arm(instance_id)

    def _arm(self, instance_id: str) -> None:
        """Announce the stream's completion when its model completes it (if within HORIZON_S)."""
        self._disarm(instance_id)
        if self.event_sink is None or instance_id not in self._outgoing:
            return
        model, started = self._outgoing[instance_id]
        end = model.at(HORIZON_S)
        if end.status != "completed" or end.total_time_ms is None:
            return
        delay = max(started + end.total_time_ms / 1000 - time.time(), 0.0)
        event = MigrationEvent(instance_id, "completed", end.passes)
        self._alarms[instance_id] = asyncio.get_running_loop().call_later(delay, self.emit, event)

    def _disarm(self, instance_id: str) -> None:
        alarm = self._alarms.pop(instance_id, None)
        if alarm is not None:
            alarm.cancel()

    async def migration_status(self, instance_id: str) -> MigrationProgress:
        _check_id(instance_id)
        if not self._alive(instance_id):
            raise DriverError(f"{instance_id} does not run on this host")
        return self._read_outgoing(instance_id)

    def _clock(self) -> float:
        """Now, for the streams: while the link is cut their time stands still."""
        return self._link_down_since if self._link_down_since is not None else time.time()

    def _read_outgoing(self, instance_id: str) -> MigrationProgress:
        if instance_id in self._ended:
            return self._ended[instance_id]
        if instance_id not in self._outgoing:
            return MigrationProgress(status="none")
        model, started = self._outgoing[instance_id]
        reading = model.at(max(self._clock() - started, 0.0))
        if reading.finished:
            self._ended[instance_id] = reading
            del self._outgoing[instance_id]
            self._set_power(instance_id, GuestPower.PAUSED, "migrated away")
        return reading

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

    async def finish_destination(self, instance_id: str) -> GuestStatus:
        _check_id(instance_id)
        guest = self._guests.get(instance_id)
        if instance_id not in self._targets:
            if guest is not None and guest.power is GuestPower.RUNNING:
                return guest  # finished before
            raise DriverError(f"no incoming migration of {instance_id} on this host")
        assert guest is not None
        if guest.power in DEAD:
            raise DriverError(f"the incoming QEMU of {instance_id} exited: migration failed")
        self._targets.discard(instance_id)
        self._set_power(instance_id, GuestPower.RUNNING, "")
        return guest

    async def finish_source(self, instance_id: str) -> None:
        _check_id(instance_id)
        guest = self._guests.get(instance_id)
        if guest is None:
            return  # finished before
        if instance_id in self._targets:
            raise DriverError(f"{instance_id} is an incoming migration target on this host")
        if instance_id in self._outgoing:
            self._read_outgoing(instance_id)  # a stream that completed handed the guest over
        if guest.power not in (GuestPower.PAUSED, *DEAD):
            raise DriverError(
                f"{instance_id} is {guest.power} here, not handed over: not removing it"
            )
        self._drop(instance_id)

    async def abort_migration(self, instance_id: str, *, source: bool) -> None:
        _check_id(instance_id)
        if source:
            self._abort_source(instance_id)
        else:
            await self._abort_destination(instance_id)

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
        if self._outgoing.pop(instance_id, None) is not None:
            self._ended[instance_id] = MigrationProgress(status="cancelled")
            self._disarm(instance_id)
            self.emit(MigrationEvent(instance_id, "cancelled"))
        self._doomed.discard(instance_id)
        self._set_power(instance_id, GuestPower.RUNNING, "")

    async def _abort_destination(self, instance_id: str) -> None:
        if instance_id not in self._guests:
            return  # aborted before, or never prepared
        if instance_id not in self._targets:
            raise DriverError(f"{instance_id} runs on this host as a guest, not as a target")
        if self._guests[instance_id].detail == ARRIVED:
            raise DriverError(f"the migration of {instance_id} completed: the guest runs here now")
        self._drop(instance_id)

    def _alive(self, instance_id: str) -> bool:
        guest = self._guests.get(instance_id)
        return guest is not None and guest.power not in DEAD

    def _require_source(self, instance_id: str) -> None:
        """The QEMU driver's test before a source-side call: a live guest, not a target."""
        _check_id(instance_id)
        if instance_id in self._targets:
            raise DriverError(f"{instance_id} is an incoming migration target on this host")
        if not self._alive(instance_id):
            raise DriverError(f"{instance_id} does not run on this host")

    def _set_power(self, instance_id: str, power: GuestPower, detail: str) -> None:
        guest = self._guests.get(instance_id)
        if guest is not None:
            guest.power = power
            guest.detail = detail
            self._save()

    # -- fault hooks (see the module's docstring) --------------------------------------------

    def crash(self, instance_id: str) -> Crash:
        """The guest's QEMU process dies."""
        if instance_id not in self._guests:
            raise DriverError(f"{instance_id} is not on this host")
        target = instance_id in self._targets
        stream = self._read_outgoing(instance_id).status
        self._outgoing.pop(instance_id, None)
        self._ended.pop(instance_id, None)
        self._doomed.discard(instance_id)
        why = "the incoming QEMU exited" if target else "no QEMU process"
        self._set_power(instance_id, GuestPower.STOPPED, why)
        return Crash(target, stream)

    def peer_lost(self, instance_id: str) -> str:
        """The other end of this guest's migration vanished. Returns the status of this
        source's stream before (`none` for a target, or without a stream)."""
        if not self._alive(instance_id):
            return "none"
        if instance_id in self._targets:
            if self._guests[instance_id].detail != ARRIVED:
                self._set_power(instance_id, GuestPower.STOPPED, "the incoming QEMU exited")
            return "none"
        status = self._read_outgoing(instance_id).status
        if status in IN_PROGRESS:
            del self._outgoing[instance_id]
            self._ended[instance_id] = MigrationProgress(
                status="failed", error="Unable to write to socket: Connection reset by peer"
            )
            self._set_power(instance_id, GuestPower.RUNNING, "")
        elif status != "completed" and not status.startswith("postcopy"):
            self._doomed.add(instance_id)  # until the stream is tried, or the source aborts
            self._save()
        return status

    def arrive(self, instance_id: str) -> None:
        """The stream into this target completed: the guest runs here (it stays a target,
        reported `incoming`, until finish-destination, as with the QEMU driver)."""
        if instance_id in self._targets and self._alive(instance_id):
            self._set_power(instance_id, GuestPower.INCOMING, ARRIVED)

    def set_link(self, *, up: bool) -> None:
        """Cut the host's migration link, or bring it back."""
        now = time.time()
        if up and self._link_down_since is not None:
            cut = self._link_down_since
            for instance_id, (model, started) in list(self._outgoing.items()):
                self._outgoing[instance_id] = (model, started + now - max(cut, started))
            self._link_down_since = None
        elif not up and self._link_down_since is None:
            self._link_down_since = now
        self._save()

    @property
    def link_up(self) -> bool:
        return self._link_down_since is None

    # -- state file ----------------------------------------------------------------------------

    def _save(self) -> None:
        """Write the state atomically: an agent killed while saving leaves the old or the new
        file, never half of one."""
        if self._state_file is None:
            return
        saved = {
            "guests": [self._saved(g) for g in self._guests.values()],
            "link_down_since": self._link_down_since,
        }
        partial = self._state_file.with_name(self._state_file.name + ".tmp")
        partial.write_text(json.dumps(saved))
        partial.replace(self._state_file)

    def _saved(self, guest: GuestStatus) -> dict[str, Any]:
        entry = {**asdict(guest), "spec": asdict(self._specs[guest.id])}
        if guest.id in self._targets:
            entry["target"] = True
        if guest.id in self._doomed:
            entry["doomed"] = True
        if guest.id in self._outgoing:
            model, started = self._outgoing[guest.id]
            entry["outgoing"] = {"model": asdict(model), "started": started}
        if guest.id in self._ended:
            entry["ended"] = asdict(self._ended[guest.id])
        return entry
