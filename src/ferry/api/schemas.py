"""Response and request bodies of API v1."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ferry.domain.auth import Permission, Role
from ferry.domain.host import AdminState, Liveness, MaintenanceState
from ferry.protocol import Capabilities, Inventory


class ErrorOut(BaseModel):
    error: str = Field(description="stable machine-readable code")
    message: str = Field(description="what went wrong, for people")


class AdminOut(BaseModel):
    state: AdminState
    reason: str | None
    actor: str | None
    changed_at: datetime | None


class MaintenanceInfo(BaseModel):
    state: MaintenanceState
    reason: str | None
    actor: str | None
    since: datetime | None
    changed_at: datetime | None
    schedulable: bool = Field(description="false from the moment maintenance is entered")


class ResourcesOut(BaseModel):
    vcpus: int
    ram_mb: int
    disk_gb: int


class StorageOut(BaseModel):
    kind: str = Field(description="local (the host's own) or shared (a pool of hosts)")
    pool: str = Field(description="the shared pool's name; empty for local")
    free_gb: int = Field(description="free space, as the host's agent last reported it")


class HostOut(BaseModel):
    name: str
    management_address: str
    migration_address: str
    liveness: Liveness
    last_heartbeat_at: datetime | None
    admin: AdminOut
    maintenance: MaintenanceInfo
    inventory: Inventory
    capabilities: Capabilities
    instances: int
    capacity: ResourcesOut = Field(
        description="what can be placed: inventory less reservations, times allocation ratios"
    )
    used: ResourcesOut = Field(
        description="claimed by allocations: the host's instances and migrations towards it"
    )
    storage: StorageOut
    agent_version: str
    agent_url: str | None
    registered_at: datetime


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(description="1-255 characters", max_length=4096)


class OptionalReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, description="1-255 characters", max_length=4096)


class MaintenanceEnterIn(ReasonIn):
    dry_run: bool = Field(default=False, description="check and preview; change nothing")
    force: bool = Field(
        default=False,
        description="enter even when the pre-check finds instances no host can take "
        "(a partial drain: the others move, the drain then fails naming those left)",
    )
    policy: dict[str, Any] = Field(
        default_factory=dict,
        description="drain policy overrides: max_parallel, max_outbound, prepare_ahead, "
        "max_inbound, max_attempts, retry_backoff_s, migration (convergence policy)",
    )


class PlanEntry(BaseModel):
    instance: str
    instance_id: str | None = None
    destination: str | None
    reason: str | None = None


class DestinationLoad(BaseModel):
    host: str
    instances: int = Field(description="instances the plan sends there")
    capacity: ResourcesOut
    before: ResourcesOut
    after: ResourcesOut
    utilization_before: float = Field(description="dominant share (0..1) before the drain")
    utilization_after: float


class PlanOut(BaseModel):
    complete: bool = Field(description="the pre-check: every instance has a destination")
    placements: list[PlanEntry]
    unplaced: list[PlanEntry]
    loads: list[DestinationLoad]


class DrainOut(BaseModel):
    id: str
    state: str
    reason: str
    actor: str
    instances_total: int
    instances_moved: int
    instances_failed: int
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    plan: list[PlanEntry] = Field(description="each instance's planned destination, or why none")
    force: bool = Field(description="entered despite a failed pre-check")


class DiskProgressOut(BaseModel):
    """A local disk copied with its instance (a migration between hosts' local storage)."""

    total_bytes: int = Field(description="the disk's allocated bytes to copy, with its writes")
    copied_bytes: int
    remaining_bytes: int
    throughput_mbps: float | None
    ready: bool = Field(description="the copy is in sync: the RAM moves (or moved) next")

    @classmethod
    def of(cls, migration: Any) -> DiskProgressOut | None:
        """The disk part of a migration record; None when it copies no disk."""
        total = migration.disk_bytes_total
        if total is None:
            return None
        copied = migration.disk_bytes_copied or 0
        return cls(
            total_bytes=total,
            copied_bytes=copied,
            remaining_bytes=max(total - copied, 0),
            throughput_mbps=migration.disk_throughput_mbps,
            ready=bool(migration.disk_ready),
        )


class DrainMigrationOut(BaseModel):
    id: str
    instance: str
    attempt: int
    kind: str
    state: str
    destination: str | None
    bytes_total: int | None
    bytes_sent: int | None
    bytes_remaining: int | None
    throughput_mbps: float | None
    passes: int | None
    disk: DiskProgressOut | None = Field(default=None, description="a local disk's copy")
    downtime_ms: int | None = Field(description="QEMU's measured downtime, once completed")
    total_time_ms: int | None = Field(
        default=None, description="QEMU's measured time from the stream's start to switchover"
    )
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class MaintenanceOut(BaseModel):
    host: str
    maintenance: MaintenanceInfo
    drain: DrainOut | None
    instances_remaining: int
    migrations: list[DrainMigrationOut] = Field(
        default_factory=list, description="the latest drain's migrations, every attempt"
    )


class InstanceBrief(BaseModel):
    id: str
    name: str
    vcpus: int
    ram_mb: int
    state: str
    disk_bytes: int = Field(
        default=0, description="its local disk's allocated bytes, copied by a move (0: shared)"
    )


class BytesToMove(BaseModel):
    """What a drain of the host sends over its migration link: the physical bound of the drain
    is `total_bytes` over that link's throughput, whatever streams run at once."""

    ram_bytes: int
    disk_bytes: int = Field(description="local disks' allocated bytes, as last reported")
    total_bytes: int


class MaintenancePreviewOut(BaseModel):
    dry_run: Literal[True] = True
    host: str
    from_state: MaintenanceState
    to_state: MaintenanceState
    instances: list[InstanceBrief]
    to_move: BytesToMove
    plan: PlanOut
    notes: list[str]


class ServerGroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63)
    policy: str = Field(
        max_length=64,
        description="affinity, anti-affinity (hard: a filter), soft-affinity or "
        "soft-anti-affinity (soft: a weigher, as far as the hosts allow)",
    )


class ServerGroupMember(BaseModel):
    name: str
    host: str | None
    state: str


class ServerGroupOut(BaseModel):
    name: str
    policy: str
    members: list[ServerGroupMember] = Field(description="live instances, by name")
    created_by: str
    created_at: datetime


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    kind: str
    actor: str
    host: str | None
    instance_id: str | None
    migration_id: str | None
    drain_id: str | None
    message: str
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: int | None = Field(description="pass as before= (or after= when ascending)")


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=256)
    role: Role


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    role: Role
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None


class TokenCreatedOut(TokenOut):
    secret: str = Field(description="shown once; only its hash is stored")


class WhoAmIOut(BaseModel):
    name: str = Field(description="the token's name: the actor recorded in events")
    role: Role
    permissions: list[Permission] = Field(description="what the role may do")


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    database: Literal["ok"]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63)
    url: str = Field(max_length=2048, description="http(s) URL that receives the events")
    kinds: list[str] | None = Field(
        default=None,
        max_length=32,
        description="event kind prefixes, e.g. ['migration.failed', 'drain']; default: "
        "host.maintenance, drain and migration (every kind a webhook may carry)",
    )
    secret: str | None = Field(
        default=None,
        max_length=256,
        description="HMAC-SHA256 signing secret, 16-256 printable characters; default: generated",
    )


class WebhookOut(BaseModel):
    name: str
    url: str
    kinds: list[str]
    enabled: bool
    cursor: int = Field(description="id of the last event delivered or dropped")
    pending: int = Field(description="matching events after the cursor")
    attempts: int = Field(description="failed attempts at the next pending event")
    delivered: int
    failures: int = Field(description="events dropped after their last attempt")
    last_status: int | None = Field(description="HTTP status of the last answer")
    last_error: str | None
    last_error_at: datetime | None
    last_delivery_at: datetime | None
    created_by: str
    created_at: datetime


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="signs every delivery; shown once, in this response only")


class WebhookTestOut(BaseModel):
    name: str
    event_id: str = Field(description="id of the ping CloudEvent sent")
    delivered: bool = Field(description="the receiver answered 2xx in time")
    status: int | None = Field(description="the receiver's HTTP status, if it answered")
    error: str | None
    elapsed_ms: float


class ImageOut(BaseModel):
    """An image of the catalog, as the controller measured it when it was uploaded."""

    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    format: Literal["qcow2", "raw"]
    size_bytes: int = Field(description="the file's size, as stored")
    virtual_size_bytes: int = Field(description="the disk's size, as qemu-img reads it")
    sha256: str = Field(description="of the file, computed by the controller")
    created_by: str
    created_at: datetime
