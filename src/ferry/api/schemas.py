"""Response and request bodies of API v1."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ferry.domain.auth import Role
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


class PlanEntry(BaseModel):
    instance: str
    instance_id: str | None = None
    destination: str | None
    reason: str | None = None


class ResourcesOut(BaseModel):
    vcpus: int
    ram_mb: int
    disk_gb: int


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


class MaintenanceOut(BaseModel):
    host: str
    maintenance: MaintenanceInfo
    drain: DrainOut | None
    instances_remaining: int


class InstanceBrief(BaseModel):
    id: str
    name: str
    vcpus: int
    ram_mb: int
    state: str


class MaintenancePreviewOut(BaseModel):
    dry_run: Literal[True] = True
    host: str
    from_state: MaintenanceState
    to_state: MaintenanceState
    instances: list[InstanceBrief]
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


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    database: Literal["ok"]
