"""The driver interface: what an agent asks of a hypervisor.

Lifecycle: `spawn` boots an instance from a `GuestSpec`; `destroy` stops it and removes all it
made (process, tap, run files); `list`/`get` report what runs now, including instances that were
started before the agent (re)started: drivers re-attach to them, they never restart them.

Live migration handshake (Ganeti's shape; implemented with the migration workflow):
  destination  prepare_incoming(spec, channel) -> listening, tap ready
  source       migrate(id, channel, params)    -> transfer starts
  source       migration_status(id)            -> progress, polled or evented
  destination  finish_destination(id)          -> guest runs here
  source       finish_source(id)               -> source process gone
  either       abort_migration(id)             -> source keeps running, destination cleaned

Every method is async and idempotent where a retry after a crash may call it twice (destroy of a
missing instance succeeds; spawn of an instance that already runs with the same spec returns it).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from enum import StrEnum


class GuestPower(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    INCOMING = "incoming"  # waiting for a migration stream
    CRASHED = "crashed"


@dataclass(frozen=True)
class PortSpec:
    network: str
    mac: str
    ip: str  # with prefix length, e.g. 198.19.0.10/16
    gateway: str | None = None


@dataclass(frozen=True)
class GuestSpec:
    """Everything needed to start an instance; the same spec starts it on any host."""

    id: str
    name: str
    vcpus: int
    ram_mb: int
    ports: tuple[PortSpec, ...] = ()
    dirty_rate_mbps: int = 0  # memory-dirtying workload inside the guest, 0 = idle


@dataclass
class GuestStatus:
    id: str
    name: str
    power: GuestPower
    pid: int | None = None
    taps: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass(frozen=True)
class HostFacts:
    """What a driver reports about its host for registration."""

    vcpus: int
    ram_mb: int
    disk_gb: int
    cpu_model: str
    qemu_version: str
    machine_type: str


class DriverError(Exception):
    """A driver operation failed; the message says what and why, for the operator."""


class Driver(abc.ABC):
    name: str

    @abc.abstractmethod
    async def facts(self) -> HostFacts: ...

    @abc.abstractmethod
    async def spawn(self, spec: GuestSpec) -> GuestStatus: ...

    @abc.abstractmethod
    async def destroy(self, instance_id: str) -> None: ...

    @abc.abstractmethod
    async def list(self) -> list[GuestStatus]: ...

    async def get(self, instance_id: str) -> GuestStatus | None:
        return next((g for g in await self.list() if g.id == instance_id), None)

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections; running guests keep running."""
