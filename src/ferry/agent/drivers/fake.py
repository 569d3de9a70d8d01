"""The fake driver: a simulated host, no processes. It keeps the contract of `Driver` exactly
(idempotent spawn and destroy, re-attach after an agent restart through its state file), so
tests and cluster-scale simulations exercise the same agent and controller code as real hosts.

State can live in a JSON file so that an agent restart finds its "running" guests again, like
the QEMU driver finds its processes.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path

from ferry.agent.drivers.base import (
    Driver,
    DriverError,
    GuestPower,
    GuestSpec,
    GuestStatus,
    HostFacts,
    PortSpec,
)


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

    def _save(self) -> None:
        if self._state_file is not None:
            saved = [
                {**asdict(g), "spec": asdict(self._specs[g.id])} for g in self._guests.values()
            ]
            self._state_file.write_text(json.dumps(saved))
