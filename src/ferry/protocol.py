"""Messages between agents and the controller. Agents import this module, never the API's."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ferry.domain import validation

HostName = Annotated[str, AfterValidator(validation.host_name)]
NetworkName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
Label = Annotated[str, Field(min_length=1, max_length=64)]
Address = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9.:\[\]-]+$")]


class Inventory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vcpus: int = Field(ge=1, le=4096)
    ram_mb: int = Field(ge=64, le=64 * 1024 * 1024)
    disk_gb: int = Field(ge=0, le=1024 * 1024)
    cpu_allocation_ratio: float = Field(default=4.0, gt=0, le=64)
    ram_allocation_ratio: float = Field(default=1.0, gt=0, le=8)
    disk_allocation_ratio: float = Field(default=1.0, gt=0, le=8)
    reserved_vcpus: int = Field(default=0, ge=0)
    reserved_ram_mb: int = Field(default=0, ge=0)
    reserved_disk_gb: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _reserved_within_capacity(self) -> Inventory:
        for kind, total, reserved in (
            ("vcpus", self.vcpus, self.reserved_vcpus),
            ("ram_mb", self.ram_mb, self.reserved_ram_mb),
            ("disk_gb", self.disk_gb, self.reserved_disk_gb),
        ):
            if reserved > total:
                raise ValueError(f"reserved {kind} ({reserved}) exceeds the host's {total}")
        return self


class Capabilities(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu_model: Label
    qemu_version: Label
    machine_type: Label
    accelerator: Literal["kvm", "tcg"] = "tcg"
    networks: list[NetworkName] = Field(default_factory=list, max_length=256)

    @model_validator(mode="after")
    def _unique_networks(self) -> Capabilities:
        if len(set(self.networks)) != len(self.networks):
            raise ValueError("networks must not repeat")
        return self


class StorageReport(BaseModel):
    """A host's instance storage: its own (local), or a shared pool every host naming it
    mounts at the same path; its size and free space as the host sees them."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "shared"] = "local"
    pool: str = Field(default="", pattern=r"^([a-z0-9][a-z0-9-]{0,62})?$")
    total_gb: int = Field(default=0, ge=0)
    free_gb: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _pool_named(self) -> StorageReport:
        if (self.kind == "shared") != bool(self.pool):
            raise ValueError("shared storage names its pool; local storage names none")
        return self


class HostRegistration(BaseModel):
    """Sent by an agent when it starts: who the host is and what it offers."""

    model_config = ConfigDict(extra="forbid")

    name: HostName
    management_address: Address
    migration_address: Address
    inventory: Inventory
    capabilities: Capabilities
    agent_version: str = Field(default="", max_length=32)
    agent_url: str | None = Field(
        default=None, max_length=128, pattern=r"^https://", description="the agent's HTTPS API"
    )
    storage: StorageReport | None = Field(default=None, description="None: no instance storage")


class GuestReport(BaseModel):
    """One guest as the agent's driver sees it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(max_length=36)
    name: str = Field(max_length=63)
    power: str = Field(max_length=16)
    pid: int | None = None
    detail: str = Field(default="", max_length=512)
    disk_bytes: int | None = Field(
        default=None, ge=0, description="its local disk's allocated bytes (what a move copies)"
    )


class DiskStorage(BaseModel):
    """The instance disks on a host's storage, as its agent lists them (`GET /v1/disks`): on
    shared storage, every disk of the pool."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "shared"]
    pool: str = Field(max_length=63)
    instance_ids: list[str]
    total_bytes: int = Field(ge=0)
    free_bytes: int = Field(ge=0)
    allocated: dict[str, int] = Field(
        default_factory=dict, description="local storage: each disk's allocated bytes"
    )


class Heartbeat(BaseModel):
    """Sent every heartbeat interval; `guests` is what runs on the host now (None: unknown)."""

    model_config = ConfigDict(extra="forbid")

    guests: list[GuestReport] | None = None
    storage_free_gb: int | None = Field(default=None, ge=0, description="free instance storage")


class PortIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    network: NetworkName
    mac: str = Field(pattern=r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
    ip: str = Field(max_length=64, description="address/prefix")
    gateway: str | None = None


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ImageRef(BaseModel):
    """An image of the controller's catalog, as an agent fetches and checks it
    (`GET /v1/agent/images/{id}/file`, agent-role token)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[0-9a-f-]{36}$")
    name: str = Field(max_length=63)
    format: Literal["qcow2", "raw"]
    size_bytes: int = Field(ge=1, description="the file's size, as stored")
    virtual_size_bytes: int = Field(ge=1)
    sha256: Sha256


class DiskIn(BaseModel):
    """An instance's root disk: a qcow2 overlay on `image`, of `size_bytes` (virtual), in the
    host's instance storage (the agent's [storage]; the same file on every host of a shared
    pool)."""

    model_config = ConfigDict(extra="forbid")

    image: ImageRef
    size_bytes: int = Field(ge=1)


class GuestSpecIn(BaseModel):
    """What the controller asks an agent to start."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[0-9a-f-]{36}$")
    name: str = Field(max_length=63)
    vcpus: int = Field(ge=1, le=64)
    ram_mb: int = Field(ge=64, le=1024 * 1024)
    ports: list[PortIn] = Field(default_factory=list, max_length=8)
    dirty_rate_mbps: int = Field(default=0, ge=0, le=10_000)
    disk: DiskIn | None = Field(default=None, description="None: boots without a disk")
    disk_write_kibps: int = Field(default=0, ge=0, le=1_000_000)


class RegistrationAccepted(BaseModel):
    host: str
    heartbeat_interval: float = Field(description="seconds between the heartbeats to send")
    created: bool


class HeartbeatAccepted(BaseModel):
    host: str
    heartbeat_interval: float


class MigrationParamsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_bandwidth_bytes: int = Field(ge=1024 * 1024, le=100 * 2**30)
    downtime_limit_ms: int = Field(default=300, ge=1, le=60_000)
    auto_converge: bool = True
    postcopy: bool = False


class DiskCopyIn(BaseModel):
    """Destination: a local disk comes with the guest, exported on `port` to `source_host`."""

    model_config = ConfigDict(extra="forbid")

    port: int = Field(ge=1024, le=65535)
    source_host: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*$")


class IncomingIn(BaseModel):
    """Destination: prepare to receive `spec` on `port` (and its local disk, with `disk`)."""

    model_config = ConfigDict(extra="forbid")

    spec: GuestSpecIn
    port: int = Field(ge=1024, le=65535)
    params: MigrationParamsIn
    disk: DiskCopyIn | None = None


class MigrateIn(BaseModel):
    """Source: send the guest to the destination's channel."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field(max_length=64)
    port: int = Field(ge=1024, le=65535)
    tls_hostname: str = Field(max_length=253)
    params: MigrationParamsIn
    disk_port: int | None = Field(default=None, ge=1024, le=65535)  # a local disk's export


class TuneIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    downtime_limit_ms: int | None = Field(default=None, ge=1, le=60_000)
    max_bandwidth_bytes: int | None = Field(default=None, ge=1024 * 1024)
    start_postcopy: bool = False


class MigrationEventIn(BaseModel):
    """A guest's migration changed on the reporting host (QEMU's MIGRATION or MIGRATION_PASS)."""

    model_config = ConfigDict(extra="forbid")

    instance_id: str = Field(pattern=r"^[0-9a-f-]{8,36}$")
    status: str = Field(min_length=1, max_length=32)
    passes: int = Field(default=0, ge=0)


class MigrationEvents(BaseModel):
    """What an agent heard since its last report of them (the latest per guest)."""

    model_config = ConfigDict(extra="forbid")

    events: list[MigrationEventIn] = Field(min_length=1, max_length=1000)


class MigrationEventsAccepted(BaseModel):
    host: str
    accepted: int  # events about a migration in flight: each has its progress read at once


class MigrationProgressOut(BaseModel):
    status: str
    total_bytes: int = 0
    transferred_bytes: int = 0
    remaining_bytes: int = 0
    dirty_rate_bytes: int = 0
    passes: int = 0
    throughput_mbps: float = 0.0
    expected_downtime_ms: int = 0
    downtime_ms: int | None = None
    total_time_ms: int | None = None
    error: str | None = None
    disk_total_bytes: int = 0
    disk_copied_bytes: int = 0
    disk_ready: bool = False
    disk_throughput_mbps: float = 0.0
