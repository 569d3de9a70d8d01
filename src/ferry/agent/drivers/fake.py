"""The fake driver: a simulated host, no processes. It keeps the contract of `Driver` exactly
(idempotent spawn and destroy, re-attach after an agent restart through its state file), so
tests and cluster-scale simulations exercise the same agent and controller code as real hosts.

State can live in a JSON file so that an agent restart finds its "running" guests again, like
the QEMU driver finds its processes, and their outgoing migrations too: a QEMU process keeps
migrating while its agent is down, and a restarted agent reads where it got (query-migrate).

The migration calls refuse what the QEMU driver refuses, so the controller meets the same answers:
no progress for a guest that is not here, no abort of a source that handed over (or is in
post-copy), no removal of a source that was not handed over, no abort of a destination that runs
the guest as its own.
"""

from __future__ import annotations

import asyncio
import json
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
    HostFacts,
    MigrationChannel,
    MigrationParams,
    MigrationProgress,
    PortSpec,
)
from ferry.agent.drivers.fake_migration import MIB, SimulatedMigration


class FakeDriver(Driver):
    name = "fake"

    def __init__(
        self, facts: HostFacts, state_file: Path | None = None, boot_seconds: float = 0.0
    ) -> None:
        self._facts = facts
        self._state_file = state_file
        self._boot_seconds = boot_seconds
        self._guests: dict[str, GuestStatus] = {}
        self._specs: dict[str, GuestSpec] = {}
        # Outgoing migrations: the model and when it started (wall clock, so that it survives a
        # restart), or a final reading.
        self._outgoing: dict[str, tuple[SimulatedMigration, float]] = {}
        self._ended: dict[str, MigrationProgress] = {}
        if state_file is not None and state_file.exists():
            for raw in json.loads(state_file.read_text()):
                self._load(raw)

    def _load(self, raw: dict[str, Any]) -> None:
        spec = raw.pop("spec")
        outgoing, ended = raw.pop("outgoing", None), raw.pop("ended", None)
        status = GuestStatus(**{**raw, "power": GuestPower(raw["power"])})
        self._guests[status.id] = status
        ports = tuple(PortSpec(**port) for port in spec.pop("ports"))
        self._specs[status.id] = GuestSpec(**spec, ports=ports)
        if outgoing is not None:
            model = outgoing["model"]
            params = MigrationParams(**model.pop("params"))
            self._outgoing[status.id] = (
                SimulatedMigration(**model, params=params),
                outgoing["started"],
            )
        if ended is not None:
            self._ended[status.id] = MigrationProgress(**ended)

    async def facts(self) -> HostFacts:
        return self._facts

    async def spawn(self, spec: GuestSpec) -> GuestStatus:
        existing = self._guests.get(spec.id)
        if existing is not None:
            return existing
        used = sum(s.ram_mb for s in self._specs.values())
        if used + spec.ram_mb > self._facts.ram_mb:
            raise DriverError(
                f"cannot start {spec.name}: {spec.ram_mb} MiB requested, "
                f"{self._facts.ram_mb - used} MiB free on this simulated host"
            )
        if self._boot_seconds:
            await asyncio.sleep(self._boot_seconds)
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
        self._guests.pop(instance_id, None)
        self._specs.pop(instance_id, None)
        self._outgoing.pop(instance_id, None)
        self._ended.pop(instance_id, None)
        self._save()

    async def list(self) -> list[GuestStatus]:
        for instance_id in list(self._outgoing):
            self._read_outgoing(instance_id)  # a finished stream pauses its source
        return sorted(self._guests.values(), key=lambda g: g.name)

    # -- live migration: see fake_migration.py for the model --------------------------------

    async def prepare_incoming(
        self, spec: GuestSpec, port: int, params: MigrationParams
    ) -> GuestStatus:
        existing = self._guests.get(spec.id)
        if existing is not None:
            if existing.power is GuestPower.INCOMING:
                return existing
            raise DriverError(f"{spec.name} already runs on this host")
        status = await self.spawn(spec)
        status.power = GuestPower.INCOMING
        status.detail = f"waiting for a migration stream on port {port}"
        self._save()
        return status

    async def migrate(
        self, instance_id: str, channel: MigrationChannel, params: MigrationParams
    ) -> None:
        spec = self._running_spec(instance_id)
        if instance_id in self._outgoing:
            return
        model = SimulatedMigration(spec.ram_mb * MIB, spec.dirty_rate_mbps * MIB, params)
        self._outgoing[instance_id] = (model, time.time())
        self._ended.pop(instance_id, None)
        self._save()

    async def migration_status(self, instance_id: str) -> MigrationProgress:
        if instance_id not in self._guests:
            raise DriverError(f"{instance_id} does not run on this host")
        return self._read_outgoing(instance_id)

    def _read_outgoing(self, instance_id: str) -> MigrationProgress:
        if instance_id in self._ended:
            return self._ended[instance_id]
        if instance_id not in self._outgoing:
            return MigrationProgress(status="none")
        model, started = self._outgoing[instance_id]
        reading = model.at(time.time() - started)
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
        if instance_id not in self._outgoing:
            raise DriverError(f"no migration of {instance_id} in progress")
        model, started = self._outgoing[instance_id]
        params = replace(
            model.params,
            downtime_limit_ms=downtime_limit_ms or model.params.downtime_limit_ms,
            max_bandwidth_bytes=max_bandwidth_bytes or model.params.max_bandwidth_bytes,
        )
        if start_postcopy and not params.postcopy:
            raise DriverError("post-copy was not enabled for this migration")
        postcopy_at = time.time() - started if start_postcopy else model.postcopy_at
        self._outgoing[instance_id] = (
            replace(model, params=params, postcopy_at=postcopy_at),
            started,
        )
        self._save()

    async def finish_destination(self, instance_id: str) -> GuestStatus:
        guest = self._guests.get(instance_id)
        if guest is not None and guest.power is GuestPower.RUNNING:
            return guest  # finished before
        if guest is None or guest.power is not GuestPower.INCOMING:
            raise DriverError(f"no incoming migration of {instance_id} on this host")
        self._set_power(instance_id, GuestPower.RUNNING, "")
        return guest

    async def finish_source(self, instance_id: str) -> None:
        guest = self._guests.get(instance_id)
        if guest is None:
            return  # finished before
        if guest.power is not GuestPower.PAUSED:
            raise DriverError(
                f"{instance_id} is {guest.power} here, not handed over: not removing it"
            )
        await self.destroy(instance_id)

    async def abort_migration(self, instance_id: str, *, source: bool) -> None:
        if source:
            self._abort_source(instance_id)
        else:
            await self._abort_destination(instance_id)

    def _abort_source(self, instance_id: str) -> None:
        guest = self._guests.get(instance_id)
        if guest is None or guest.power is GuestPower.INCOMING:
            raise DriverError(f"{instance_id} does not run on this host")
        status = self._read_outgoing(instance_id).status
        if status == "completed":
            raise DriverError(
                f"the migration of {instance_id} completed: the guest runs on the destination"
            )
        if status == "postcopy-active":
            raise DriverError(
                f"{instance_id} is in post-copy: the destination runs it; it can only complete"
            )
        if self._outgoing.pop(instance_id, None) is not None:
            self._ended[instance_id] = MigrationProgress(status="cancelled")
        self._set_power(instance_id, GuestPower.RUNNING, "")

    async def _abort_destination(self, instance_id: str) -> None:
        guest = self._guests.get(instance_id)
        if guest is None:
            return  # aborted before, or never prepared
        if guest.power is not GuestPower.INCOMING:
            raise DriverError(f"{instance_id} runs on this host as a guest, not as a target")
        await self.destroy(instance_id)

    def _running_spec(self, instance_id: str) -> GuestSpec:
        guest = self._guests.get(instance_id)
        if guest is None or guest.power is not GuestPower.RUNNING:
            raise DriverError(f"guest {instance_id} does not run on this host")
        return self._specs[instance_id]

    def _set_power(self, instance_id: str, power: GuestPower, detail: str) -> None:
        guest = self._guests.get(instance_id)
        if guest is not None:
            guest.power = power
            guest.detail = detail
            self._save()

    def _save(self) -> None:
        if self._state_file is not None:
            saved = [self._saved(g) for g in self._guests.values()]
            self._state_file.write_text(json.dumps(saved))

    def _saved(self, guest: GuestStatus) -> dict[str, Any]:
        entry = {**asdict(guest), "spec": asdict(self._specs[guest.id])}
        if guest.id in self._outgoing:
            model, started = self._outgoing[guest.id]
            entry["outgoing"] = {"model": asdict(model), "started": started}
        if guest.id in self._ended:
            entry["ended"] = asdict(self._ended[guest.id])
        return entry
