"""The fake driver: a simulated host, no processes. It keeps the contract of `Driver` exactly
(idempotent spawn and destroy, re-attach after an agent restart through its state file), so
tests and cluster-scale simulations exercise the same agent and controller code as real hosts.

State can live in a JSON file so that an agent restart finds its "running" guests again, like
the QEMU driver finds its processes.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

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
        # Outgoing migrations: the model and when it started (monotonic), or a final reading.
        self._outgoing: dict[str, tuple[SimulatedMigration, float]] = {}
        self._ended: dict[str, MigrationProgress] = {}
        if state_file is not None and state_file.exists():
            for raw in json.loads(state_file.read_text()):
                spec = raw.pop("spec")
                status = GuestStatus(**{**raw, "power": GuestPower(raw["power"])})
                self._guests[status.id] = status
                ports = tuple(PortSpec(**port) for port in spec.pop("ports"))
                self._specs[status.id] = GuestSpec(**spec, ports=ports)

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
        self._save()

    async def list(self) -> list[GuestStatus]:
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
        self._outgoing[instance_id] = (model, time.monotonic())
        self._ended.pop(instance_id, None)

    async def migration_status(self, instance_id: str) -> MigrationProgress:
        if instance_id in self._ended:
            return self._ended[instance_id]
        if instance_id not in self._outgoing:
            return MigrationProgress(status="none")
        model, started = self._outgoing[instance_id]
        reading = model.at(time.monotonic() - started)
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
        postcopy_at = time.monotonic() - started if start_postcopy else model.postcopy_at
        self._outgoing[instance_id] = (
            replace(model, params=params, postcopy_at=postcopy_at),
            started,
        )

    async def finish_destination(self, instance_id: str) -> GuestStatus:
        guest = self._guests.get(instance_id)
        if guest is None:
            raise DriverError(f"no incoming guest {instance_id} on this host")
        self._set_power(instance_id, GuestPower.RUNNING, "")
        return guest

    async def finish_source(self, instance_id: str) -> None:
        self._ended.pop(instance_id, None)
        await self.destroy(instance_id)

    async def abort_migration(self, instance_id: str, *, source: bool) -> None:
        if source:
            if self._outgoing.pop(instance_id, None) is not None:
                self._ended[instance_id] = MigrationProgress(status="cancelled")
            if instance_id in self._guests:
                self._set_power(instance_id, GuestPower.RUNNING, "")
            return
        guest = self._guests.get(instance_id)
        if guest is not None and guest.power is GuestPower.INCOMING:
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
            saved = [
                {**asdict(g), "spec": asdict(self._specs[g.id])} for g in self._guests.values()
            ]
            self._state_file.write_text(json.dumps(saved))
