"""The driver interface: what an agent asks of a hypervisor.

Lifecycle: `spawn` boots an instance from a `GuestSpec`; `destroy` stops it and removes all it
made (process, tap, run files); `list`/`get` report what runs now, including instances that were
started before the agent (re)started: drivers re-attach to them, they never restart them.

Live migration handshake (Ganeti's shape; implemented with the migration workflow):
  destination  prepare_incoming(spec, channel) -> listening, tap ready (a local disk: an empty
                                                  copy exported over NBD with TLS)
  source       migrate(id, channel, params)    -> transfer starts (a local disk: the mirror
                                                  first; called again once it is in sync, RAM)
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
    # Each disk's allocated bytes on local storage (what moving it copies); not kept for shared.
    allocated: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class MigrationChannel:
    """Where the destination listens for the stream, and the name its certificate carries."""

    address: str  # the destination host's migration address
    port: int
    tls_hostname: str  # checked against the destination certificate's SANs
    disk_port: int | None = None  # a local disk: the destination's NBD export of its copy


@dataclass(frozen=True)
class DiskCopy:
    """Destination: a local disk comes with the guest. An empty overlay of the source's size on
    the same cached image is exported over NBD with TLS on `port`, writable by the certificate
    of `source_host` alone; the source mirrors its overlay into it before the RAM moves."""

    port: int
    source_host: str


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

    # none, mirroring (the disk only), setup, active, pre-switchover, postcopy-active, device,
    # completed, failed, cancelled
    status: str
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
    # A local disk copied with the guest (status `mirroring` while only the disk moves): the
    # overlay's allocated bytes to copy, copied so far, and whether the copy is in sync (from
    # then on every guest write reaches both ends before it completes).
    disk_total_bytes: int = 0
    disk_copied_bytes: int = 0
    disk_ready: bool = False
    disk_throughput_mbps: float = 0.0

    @property
    def disk_remaining_bytes(self) -> int:
        return max(self.disk_total_bytes - self.disk_copied_bytes, 0)

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
    """What an agent asks of a hypervisor. Each method's docstring is its contract, kept by both
    drivers and checked against both by tests/contract (the fake on every run, QEMU as root).

    Instance ids are the controller's UUIDs (`[0-9a-f-]{8,36}`); every method that takes one
    refuses another with a DriverError ("invalid instance id"). A refusal is always a
    DriverError whose message names the instance and says why; the phrases quoted below are
    part of the contract (the controller and operators read them). "Here" is this host; a
    guest "runs here" while its process lives (any power but STOPPED); a "target" is a guest
    started by `prepare_incoming` and not yet finished by `finish_destination`.
    """

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
    async def facts(self) -> HostFacts:
        """This host's inventory and hypervisor, for registration. Never refuses."""

    async def disks(self) -> DiskInventory | None:
        """The disks on this host's instance storage; None: the host has none."""
        return None

    @abc.abstractmethod
    async def spawn(self, spec: GuestSpec) -> GuestStatus:
        """Start the guest of `spec` here; its status (RUNNING, taps made and on the bridge).

        Idempotent: a guest that already runs here (any power but STOPPED) is returned as it
        is, with no second process. A STOPPED guest (its process died) starts afresh. A disk
        guest's disk is made by its first start on this storage and reused by every later one
        (never replaced). Refuses when:
        - the guest has a disk and the host has no instance storage ("has a disk but this host
          has no instance storage"), or no image cache (QEMU; the fake then takes the image as
          cached);
        - the image cannot be fetched or checked, the disk cannot be made, a tap cannot be made,
          or the process does not start (the fake: not enough simulated RAM); nothing of the
          attempt is left but a disk made for it.
        """

    @abc.abstractmethod
    async def destroy(self, instance_id: str) -> None:
        """The instance is deleted: stop its process (a target's too), remove its taps, its
        run files and its disk. Idempotent: a guest that is not here (never was, or destroyed
        before) succeeds. Refuses only when the process cannot be stopped."""

    @abc.abstractmethod
    async def list(self) -> list[GuestStatus]:
        """Every guest this host has, its power read now: guests started before this driver
        instance are found again (a new driver over the same run directory or state file
        re-attaches; it never restarts them). A guest whose process died stays listed STOPPED
        until it is destroyed or started again; a target is listed INCOMING (detail "migration
        target (<runstate>)", "migration target (running)" once its stream completed) until
        `finish_destination`; a source that handed over is PAUSED. Order: unspecified."""

    async def get(self, instance_id: str) -> GuestStatus | None:
        """The guest as `list` reports it, or None when it is not here."""
        return next((g for g in await self.list() if g.id == instance_id), None)

    # -- live migration handshake ------------------------------------------------------------

    @abc.abstractmethod
    async def prepare_incoming(
        self,
        spec: GuestSpec,
        port: int,
        params: MigrationParams,
        disk: DiskCopy | None = None,
    ) -> GuestStatus:
        """Destination: start the guest paused, waiting for a TLS stream on `port`, taps ready;
        its status is INCOMING (detail "migration target (inmigrate)").

        Idempotent: a target of this guest already here is returned as it is (a retry). A
        STOPPED guest here is replaced. A disk guest on shared storage opens the disk the
        source uses, which it finds in the same pool. With `disk` (a local disk), the guest's
        disk here is made afresh (any copy a failed attempt left is replaced: a target's disk
        is never the guest's until `finish_destination`) and exported as `DiskCopy` says.
        Refuses when:
        - the guest runs here as a guest, not a target ("already runs on this host; it cannot
          move here");
        - the guest has a disk and this host's storage is local but no `disk` is given ("its
          disk is on another host's local storage"), or shared but without that disk ("no disk
          at ..."), or `disk` is given and the storage here is shared ("local disks move only
          to local storage");
        - the host has no TLS credentials (QEMU: "no TLS credentials"; there is no plaintext
          migration), or what `spawn` refuses for; nothing of the attempt is left.
        """

    @abc.abstractmethod
    async def migrate(
        self, instance_id: str, channel: MigrationChannel, params: MigrationParams
    ) -> None:
        """Source: start sending the guest to `channel` over TLS, and return (the stream goes on;
        `migration_status` follows it). Idempotent: a stream already sending (or in post-copy)
        is left as it is. After a failed or cancelled stream, a new one starts.

        With `channel.disk_port` (a local disk) the disk goes first: the first call starts
        mirroring the overlay into the destination's export (status `mirroring`); calls while
        the mirror is not in sync change nothing; the first call once it is (`disk_ready`)
        starts the RAM. At the switchover the source pauses, the mirror completes (the copy
        then equals the disk), and only then does the destination get the device state and
        run the guest: the source's disk stays its own throughout. Refuses when:
        - the guest is a target here ("is an incoming migration target on this host");
        - the guest does not run here ("does not run on this host");
        - its stream completed ("was handed over already: finish the source");
        - the host has no TLS credentials (QEMU).
        A destination that does not listen is no refusal: the stream fails (status `failed`).
        """

    @abc.abstractmethod
    async def migration_status(self, instance_id: str) -> MigrationProgress:
        """Source: the migration's progress now (status `none` before any stream; a finished
        stream's final reading stays until the next stream or the guest's removal). Reading
        it never changes the migration. Refuses for a guest whose process does not run here
        (unknown here, destroyed, or STOPPED: "does not run on this host")."""

    @abc.abstractmethod
    async def tune_migration(
        self,
        instance_id: str,
        *,
        downtime_limit_ms: int | None = None,
        max_bandwidth_bytes: int | None = None,
        start_postcopy: bool = False,
    ) -> None:
        """Source: change convergence while the stream runs (escalation, post-copy switch).
        None leaves a setting as it is; without a stream in progress the settings are accepted
        and change nothing (the next `migrate` sets its own). Refuses when the guest is a
        target here or does not run here (as `migrate`), and for `start_postcopy` without a
        stream in progress, or when its `migrate` did not enable post-copy."""

    @abc.abstractmethod
    async def finish_destination(self, instance_id: str) -> GuestStatus:
        """Destination: the guest runs here; announce its MAC so the fabric learns the port.
        Returns the guest RUNNING, no longer a target. QEMU waits (at most 30 s) for the stream
        to complete; the fake takes the call as the news that it did. Idempotent: a guest
        that already finished here and runs is returned. Refuses when:
        - the guest is neither a target nor a running guest here ("no incoming migration");
        - the target's process exited ("exited: migration failed"), or (QEMU) its stream
          failed or did not complete in time; the target is then left for an abort.
        """

    @abc.abstractmethod
    async def finish_source(self, instance_id: str) -> None:
        """Source: the guest moved; remove the source process, its taps and run files. Its disk
        stays on shared storage (the destination uses it) and goes on local storage (the
        destination runs on its own copy; the controller calls this only after
        `finish_destination` succeeded). Idempotent: a guest not here
        (finished before) succeeds; a STOPPED source is removed. Refuses when:
        - the guest is a target here ("is an incoming migration target on this host");
        - its process runs and did not hand the guest over, i.e. its stream has not completed
          (running, or paused by anyone but a completed migration): "is <state> here, not
          handed over: not removing it". The guest is left as it was.
        """

    @abc.abstractmethod
    async def abort_migration(self, instance_id: str, *, source: bool) -> None:
        """Cancel: the source keeps (or resumes) running the guest with its disk as it was; the
        destination's incoming process and taps are removed, and the copy of a local disk
        (a shared disk stays: it is the source's). A disk mirror in progress is cancelled and
        its connection to the destination closed.

        `source=True`: a stream in progress is cancelled (a switchover in progress, status
        `device`, is waited out rather than cancelled) and the guest is RUNNING again here;
        without a stream, or after a failed or cancelled one, it just runs on (idempotent).
        Refuses, changing nothing, when:
        - the guest is a target here, or does not run here (as `migrate`);
        - its stream completed: "completed: the guest runs on the destination";
        - it is in post-copy: "is in post-copy: the destination runs it; it can only complete".

        `source=False`: the target is removed. Idempotent: a guest not here (aborted before,
        never prepared) succeeds; a STOPPED target is removed. Refuses, changing nothing, when:
        - the guest runs here as its own, not as a target ("runs on this host as a guest, not
          as a target");
        - the stream into the target completed: "completed: the guest runs here now".
        """

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections; running guests keep running."""
