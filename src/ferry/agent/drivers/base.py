"""The driver interface: what an agent asks of a hypervisor.

Lifecycle: `spawn` boots an instance from a `GuestSpec`; `destroy` stops it and removes all it
made (process, tap, run files); `list`/`get` report what runs now, including instances that were
started before the agent (re)started: drivers re-attach to them, they never restart them.

Live migration handshake (Ganeti's shape; implemented with the migration workflow):
  destination  prepare_incoming(spec, channel) -> listening, tap ready
  source       migrate(id, channel, params)    -> transfer starts
  source       migration_status(id)            -> progress (query-migrate), read when due
                                                  and whenever an event says it changed
  destination  finish_destination(id)          -> guest runs here
  source       finish_source(id)               -> source process gone
  either       abort_migration(id)             -> source keeps running, destination cleaned

Every method is async and idempotent where a retry after a crash may call it twice (destroy of a
missing instance succeeds; spawn of an instance that already runs with the same spec returns it).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)


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
class ImageSpec:
    """An image of the controller's catalog; agents fetch it into their cache and check it."""

    id: str
    name: str
    format: str  # qcow2 or raw
    size_bytes: int
    virtual_size_bytes: int
    sha256: str


@dataclass(frozen=True)
class DiskSpec:
    """A root disk: a qcow2 overlay of `size_bytes` on `image`, in the host's storage."""

    image: ImageSpec
    size_bytes: int


@dataclass(frozen=True)
class GuestSpec:
    """Everything needed to start an instance; the same spec starts it on any host."""

    id: str
    name: str
    vcpus: int
    ram_mb: int
    ports: tuple[PortSpec, ...] = ()
    dirty_rate_mbps: int = 0  # memory-dirtying workload inside the guest, 0 = idle
    disk: DiskSpec | None = None  # None: the guest boots without a disk (kernel and initramfs)
    disk_write_kibps: int = 0  # disk-writing workload inside the guest (lab image), 0 = none

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GuestSpec:
        """The inverse of `dataclasses.asdict` (specs are kept as JSON in run directories)."""
        raw = dict(raw)
        ports = tuple(PortSpec(**p) for p in raw.pop("ports", []))
        disk = raw.pop("disk", None)
        if disk is not None:
            disk = DiskSpec(ImageSpec(**disk["image"]), disk["size_bytes"])
        return cls(**raw, ports=ports, disk=disk)


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
    accelerator: str = "tcg"  # kvm or tcg, as the driver runs its guests


@dataclass(frozen=True)
class DiskInventory:
    """The instance disks on a host's storage (on shared storage: every disk of the pool)."""

    kind: str  # local or shared
    pool: str
    instance_ids: list[str]
    total_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class MigrationChannel:
    """Where the destination listens for the stream, and the name its certificate carries."""

    address: str  # the destination host's migration address
    port: int
    tls_hostname: str  # checked against the destination certificate's SANs


@dataclass(frozen=True)
class MigrationParams:
    """Convergence settings applied to both ends before the stream starts."""

    max_bandwidth_bytes: int  # never QEMU's silent 128 MiB/s default
    downtime_limit_ms: int = 300
    auto_converge: bool = True
    postcopy: bool = False  # enable post-copy (the switch itself is a separate call)


@dataclass
class MigrationProgress:
    """One reading of a migration, from the source's point of view (QEMU's query-migrate)."""

    status: str  # none, setup, active, postcopy-active, device, completed, failed, cancelled
    total_bytes: int = 0
    transferred_bytes: int = 0
    remaining_bytes: int = 0
    dirty_rate_bytes: int = 0  # bytes dirtied per second
    passes: int = 0  # dirty-sync count: 1 is the first full pass
    throughput_mbps: float = 0.0
    expected_downtime_ms: int = 0
    downtime_ms: int | None = None  # after completion
    total_time_ms: int | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class MigrationEvent:
    """A guest's migration changed, as its hypervisor announced it (QEMU's MIGRATION and
    MIGRATION_PASS events), on either end: what to read again, not the reading itself."""

    instance_id: str
    status: str  # the migration status the hypervisor entered, as query-migrate spells it
    passes: int = 0  # dirty-sync passes begun so far, when known


MigrationEventSink = Callable[[MigrationEvent], None]


class DriverError(Exception):
    """A driver operation failed; the message says what and why, for the operator."""


class Driver(abc.ABC):
    name: str
    # Who hears of migration events (the agent forwards them to the controller); must not block.
    event_sink: MigrationEventSink | None = None

    def emit(self, event: MigrationEvent) -> None:
        if self.event_sink is None:
            return
        try:
            self.event_sink(event)
        except Exception:  # a listener's failure must not break the driver's bookkeeping
            log.exception("migration event listener failed on %s", event)

    @abc.abstractmethod
    async def facts(self) -> HostFacts: ...

    async def disks(self) -> DiskInventory | None:
        """The disks on this host's instance storage; None: the host has none."""
        return None

    @abc.abstractmethod
    async def spawn(self, spec: GuestSpec) -> GuestStatus: ...

    @abc.abstractmethod
    async def destroy(self, instance_id: str) -> None: ...

    @abc.abstractmethod
    async def list(self) -> list[GuestStatus]: ...

    async def get(self, instance_id: str) -> GuestStatus | None:
        return next((g for g in await self.list() if g.id == instance_id), None)

    # -- live migration handshake ------------------------------------------------------------

    @abc.abstractmethod
    async def prepare_incoming(
        self, spec: GuestSpec, port: int, params: MigrationParams
    ) -> GuestStatus:
        """Destination: start the guest paused, waiting for a TLS stream on `port`, tap ready."""

    @abc.abstractmethod
    async def migrate(
        self, instance_id: str, channel: MigrationChannel, params: MigrationParams
    ) -> None:
        """Source: start sending the guest to `channel` over TLS."""

    @abc.abstractmethod
    async def migration_status(self, instance_id: str) -> MigrationProgress:
        """Source: the migration's progress now."""

    @abc.abstractmethod
    async def tune_migration(
        self,
        instance_id: str,
        *,
        downtime_limit_ms: int | None = None,
        max_bandwidth_bytes: int | None = None,
        start_postcopy: bool = False,
    ) -> None:
        """Source: change convergence while the stream runs (escalation, post-copy switch)."""

    @abc.abstractmethod
    async def finish_destination(self, instance_id: str) -> GuestStatus:
        """Destination: the guest runs here; announce its MAC so the fabric learns the port."""

    @abc.abstractmethod
    async def finish_source(self, instance_id: str) -> None:
        """Source: the guest moved; remove the paused source process and its taps."""

    @abc.abstractmethod
    async def abort_migration(self, instance_id: str, *, source: bool) -> None:
        """Cancel: the source keeps (or resumes) running the guest; the destination's
        incoming process and taps are removed. Idempotent on both ends."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections; running guests keep running."""
