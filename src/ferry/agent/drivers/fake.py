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
  stream or disk mirror in progress fails and the guest keeps running (QEMU resumes it); one not
  started yet fails as soon as it starts (connection refused). A target waiting for a stream
  exits, as a failed incoming migration ends the destination QEMU in 7.2. A handed-over source
  and a guest that finished arriving are not affected.
- `arrive`: the stream into this target completed, so the guest runs here, which its report
  says as the QEMU driver's does ("migration target (running)" rather than "(inmigrate)").
  The fake learns of it only through this hook: its targets otherwise wait until
  finish-destination, so a controller that cannot hear the source waits rather than concludes.
- `set_link(up=False)`: the host's migration link is cut. Outgoing streams stay `active` (and
  mirrors `mirroring`) but no byte moves (a TCP stream over a dead link stalls; QEMU does not
  give up by itself), so the controller's no-progress timeout decides; once the link is up
  again they go on where they stopped.

A local disk moves as the QEMU driver moves it: the destination makes an empty copy (storage's
`attach`), the source mirrors its disk first and the RAM then follows (fake_source.py, with the
mirror's model in fake_mirror.py); the faults above apply to a mirror as to a stream (a crash
ends it, a lost peer fails it, a cut link stalls it). Finishing the source removes its local disk
(the destination runs on its copy); aborting a target removes its partial copy. What the
guest wrote (its disk's `data`, from its first start) reaches the destination's copy when the
copy completes, through a directory the hosts share (`FERRY_FAKE_WIRE`, see fake_mirror.py).

Events: like QEMU's, streams and mirrors announce themselves to the driver's event sink (see
fake_source.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ferry.agent.drivers.base import (
    DiskCopy,
    DiskInventory,
    DriverError,
    GuestPower,
    GuestSpec,
    GuestStatus,
    HostFacts,
    MigrationParams,
)
from ferry.agent.drivers.fake_mirror import WIRE_ENV, allocated_bytes, mark_written, take_copy
from ferry.agent.drivers.fake_source import DEAD, FakeSource, check_id
from ferry.agent.images import ImageFetcher
from ferry.agent.storage import DiskStore, attach, check_incoming

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


class FakeDriver(FakeSource):
    name = "fake"

    def __init__(
        self,
        facts: HostFacts,
        state_file: Path | None = None,
        boot_seconds: float = 0.0,
        *,
        disks: DiskStore | None = None,
        images: ImageFetcher | None = None,
        wire: Path | None = None,
    ) -> None:
        self._facts = facts
        self.disks_store = disks
        self._wire = wire or (Path(os.environ[WIRE_ENV]) if os.environ.get(WIRE_ENV) else None)
        self.images = images
        self._state_file = state_file
        self._boot_seconds = boot_seconds
        self._guests: dict[str, GuestStatus] = {}
        self._specs: dict[str, GuestSpec] = {}
        self._targets: set[str] = set()
        self._init_streams()
        if state_file is not None and state_file.exists():
            raw = json.loads(state_file.read_text())
            if isinstance(raw, list):  # the format before the link state was kept
                raw = {"guests": raw}
            self._link_down_since = raw.get("link_down_since")
            for guest in raw["guests"]:
                self._load(guest)

    def _load(self, raw: dict[str, Any]) -> None:
        spec = raw.pop("spec")
        keys = ("outgoing", "mirror", "ended", "doomed")
        streams: dict[str, Any] = {k: raw.pop(k) for k in keys if k in raw}
        target = raw.pop("target", False)
        status = GuestStatus(**{**raw, "power": GuestPower(raw["power"])})
        self._guests[status.id] = status
        self._specs[status.id] = GuestSpec.from_dict(spec)
        if target or status.power is GuestPower.INCOMING:  # older files: the power said so
            self._targets.add(status.id)
        self._load_streams(status.id, streams)

    async def disks(self) -> DiskInventory | None:
        """The store's disks; on local storage each is taken to hold what the simulated mirror
        copies (`allocated_bytes`: a fake overlay holds no data of its own)."""
        if self.disks_store is None:
            return None
        inventory = await asyncio.to_thread(self.disks_store.inventory)
        if self.disks_store.shared:
            return inventory
        modelled = {
            i: allocated_bytes(spec.disk)
            for i, spec in self._specs.items()
            if spec.disk is not None and i in inventory.allocated
        }
        return replace(inventory, allocated={**inventory.allocated, **modelled})

    async def facts(self) -> HostFacts:
        return self._facts

    async def spawn(self, spec: GuestSpec) -> GuestStatus:
        check_id(spec.id)
        return await self._start(spec, incoming=False)

    async def _start(self, spec: GuestSpec, *, incoming: bool) -> GuestStatus:
        existing = self._guests.get(spec.id)
        if existing is not None and existing.power not in DEAD:
            return existing
        attached = await attach(self.disks_store, self.images, spec, incoming=incoming)
        if attached is not None and not incoming:
            mark_written(attached[0])  # the guest's own data, from its first start on
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
        check_id(instance_id)
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
        self._drop_streams(instance_id)

    def _remove_local_disk(self, instance_id: str) -> None:
        """A local disk that is not (or no longer) the guest's: a target's partial copy, or a
        source's disk once the destination runs on its own copy."""
        if self.disks_store is not None and not self.disks_store.shared:
            self.disks_store.remove(instance_id)

    async def list(self) -> list[GuestStatus]:
        for instance_id in list(self._outgoing):
            self._read_outgoing(instance_id)  # a finished stream pauses its source
        return sorted(self._guests.values(), key=lambda g: g.name)

    # -- live migration: the source's side is fake_source.py's ------------------------------

    async def prepare_incoming(
        self,
        spec: GuestSpec,
        port: int,
        params: MigrationParams,
        disk: DiskCopy | None = None,
    ) -> GuestStatus:
        check_id(spec.id)
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

    async def finish_destination(self, instance_id: str) -> GuestStatus:
        check_id(instance_id)
        guest = self._guests.get(instance_id)
        if instance_id not in self._targets:
            if guest is not None and guest.power is GuestPower.RUNNING:
                return guest  # finished before
            raise DriverError(f"no incoming migration of {instance_id} on this host")
        assert guest is not None
        if guest.power in DEAD:
            raise DriverError(f"the incoming QEMU of {instance_id} exited: migration failed")
        self._targets.discard(instance_id)
        if self.disks_store is not None and not self.disks_store.shared:
            take_copy(self._wire, instance_id, self.disks_store.path(instance_id))
        self._set_power(instance_id, GuestPower.RUNNING, "")
        return guest

    async def finish_source(self, instance_id: str) -> None:
        """As the QEMU driver: a local disk goes with the source (the destination runs on its
        copy), last, and again by a call after a finish that did not get to it."""
        check_id(instance_id)
        guest = self._guests.get(instance_id)
        if guest is None:
            self._remove_local_disk(instance_id)  # finished before
            return
        if instance_id in self._targets:
            raise DriverError(f"{instance_id} is an incoming migration target on this host")
        if instance_id in self._outgoing:
            self._read_outgoing(instance_id)  # a stream that completed handed the guest over
        if guest.power not in (GuestPower.PAUSED, *DEAD):
            raise DriverError(
                f"{instance_id} is {guest.power} here, not handed over: not removing it"
            )
        self._drop(instance_id)
        self._remove_local_disk(instance_id)

    async def abort_migration(self, instance_id: str, *, source: bool) -> None:
        check_id(instance_id)
        if source:
            self._abort_source(instance_id)
        else:
            await self._abort_destination(instance_id)

    async def _abort_destination(self, instance_id: str) -> None:
        if instance_id not in self._guests:
            return  # aborted before, or never prepared
        if instance_id not in self._targets:
            raise DriverError(f"{instance_id} runs on this host as a guest, not as a target")
        if self._guests[instance_id].detail == ARRIVED:
            raise DriverError(f"the migration of {instance_id} completed: the guest runs here now")
        self._drop(instance_id)
        # A target's disk on local storage is a copy (check_incoming admits no other): partial.
        self._remove_local_disk(instance_id)

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
        self._drop_streams(instance_id)
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
        return self._lose_peer(instance_id)

    def arrive(self, instance_id: str) -> None:
        """The stream into this target completed: the guest runs here (it stays a target,
        reported `incoming`, until finish-destination, as with the QEMU driver)."""
        if instance_id in self._targets and self._alive(instance_id):
            self._set_power(instance_id, GuestPower.INCOMING, ARRIVED)

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
        return {**entry, **self._saved_streams(guest.id)}
