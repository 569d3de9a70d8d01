"""SQLAlchemy models: the controller's whole state. Enum values are stored as plain strings
(checked by the domain's state machines) so the schema stays portable."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ferry.db.types import UTCDateTime, utcnow
from ferry.domain.drain import DrainState
from ferry.domain.host import AdminState, Liveness, MaintenanceState
from ferry.domain.instance import InstanceState
from ferry.domain.migration import MigrationKind, MigrationState


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Host(Base):
    __tablename__ = "hosts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    management_address: Mapped[str] = mapped_column(String(64))
    migration_address: Mapped[str] = mapped_column(String(64))
    # Inventory: raw capacity, allocation ratios and what the host keeps for itself.
    vcpus: Mapped[int]
    ram_mb: Mapped[int]
    disk_gb: Mapped[int]
    cpu_allocation_ratio: Mapped[float] = mapped_column(default=4.0)
    ram_allocation_ratio: Mapped[float] = mapped_column(default=1.0)
    disk_allocation_ratio: Mapped[float] = mapped_column(default=1.0)
    reserved_vcpus: Mapped[int] = mapped_column(default=0)
    reserved_ram_mb: Mapped[int] = mapped_column(default=0)
    reserved_disk_gb: Mapped[int] = mapped_column(default=0)
    # Capabilities: what must match for a guest to move here.
    cpu_model: Mapped[str] = mapped_column(String(64))
    qemu_version: Mapped[str] = mapped_column(String(32))
    machine_type: Mapped[str] = mapped_column(String(64))
    accelerator: Mapped[str] = mapped_column(String(8), default="tcg", server_default="tcg")
    # Instance storage: the host's own (local), or a pool that every host naming it mounts
    # (shared: its capacity is the pool's, and disks there move with their guests for free).
    storage_kind: Mapped[str] = mapped_column(String(8), default="local", server_default="local")
    storage_pool: Mapped[str] = mapped_column(String(63), default="", server_default="")
    storage_free_gb: Mapped[int] = mapped_column(default=0, server_default="0")
    networks: Mapped[list[Any]] = mapped_column(default=list)
    agent_version: Mapped[str] = mapped_column(String(32), default="")
    agent_url: Mapped[str | None] = mapped_column(String(128))
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_heartbeat_at: Mapped[datetime | None]
    # The liveness last announced by an event; the live value is derived from last_heartbeat_at.
    liveness_seen: Mapped[str] = mapped_column(String(8), default=Liveness.UP.value)
    admin_state: Mapped[str] = mapped_column(String(16), default=AdminState.ENABLED.value)
    admin_reason: Mapped[str | None] = mapped_column(String(255))
    admin_actor: Mapped[str | None] = mapped_column(String(64))
    admin_changed_at: Mapped[datetime | None]
    maintenance_state: Mapped[str] = mapped_column(
        String(16), default=MaintenanceState.IN_SERVICE.value, index=True
    )
    maintenance_reason: Mapped[str | None] = mapped_column(String(255))
    maintenance_actor: Mapped[str | None] = mapped_column(String(64))
    maintenance_since: Mapped[datetime | None]
    maintenance_changed_at: Mapped[datetime | None]
    # Optimistic lock: every UPDATE checks and bumps it, so racing transitions cannot both win.
    version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": version}


class Flavor(Base):
    __tablename__ = "flavors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    vcpus: Mapped[int]
    ram_mb: Mapped[int]
    disk_gb: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Network(Base):
    """An instance network: an address range that spans every host that offers it, so an
    instance keeps its address wherever it runs."""

    __tablename__ = "networks"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    cidr: Mapped[str] = mapped_column(String(64))
    gateway: Mapped[str | None] = mapped_column(String(45))
    # Instances get addresses in [allocation_start, allocation_end] (default: the whole range);
    # addresses outside it are the network's own (its DHCP servers, routers).
    allocation_start: Mapped[str | None] = mapped_column(String(45))
    allocation_end: Mapped[str | None] = mapped_column(String(45))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ServerGroup(Base):
    """Instances placed by a group policy: affinity / anti-affinity (hard: a filter) or their
    soft variants (weighers). Members name their group in `instances.server_group`."""

    __tablename__ = "server_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    policy: Mapped[str] = mapped_column(String(32))
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Image(Base):
    """An image of the catalog: its file is `<state_dir>/images/<id>`, measured and checked by
    the controller when it was uploaded (never taken from the caller)."""

    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    format: Mapped[str] = mapped_column(String(8))  # qcow2 | raw
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    virtual_size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


_LIVE = text("state != 'deleted'")


class Instance(Base):
    __tablename__ = "instances"
    # A name is taken while its instance lives; deleted rows stay for the audit trail.
    __table_args__ = (
        Index(
            "uq_instances_live_name",
            "name",
            unique=True,
            sqlite_where=_LIVE,
            postgresql_where=_LIVE,
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63))
    vcpus: Mapped[int]
    ram_mb: Mapped[int]
    disk_gb: Mapped[int]
    image: Mapped[str] = mapped_column(String(128))  # a label: the catalog image's name, if any
    # The catalog image the root disk is made from; deleted instances let go of it (SET NULL)
    # when the image is deleted, live ones keep it from being deleted.
    image_id: Mapped[str | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL"), index=True
    )
    flavor: Mapped[str] = mapped_column(String(63), default="")
    dirty_rate_mbps: Mapped[int] = mapped_column(default=0)
    disk_write_kibps: Mapped[int] = mapped_column(default=0, server_default="0")
    # A local disk's allocated bytes as its host last reported them (what moving it copies).
    disk_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # The shared pool its disk is in; None: the local storage of its host (or no disk).
    storage_pool: Mapped[str | None] = mapped_column(String(63))
    server_group: Mapped[str | None] = mapped_column(String(63))
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default=InstanceState.BUILDING.value, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    ports: Mapped[list[Port]] = relationship(
        back_populates="instance", cascade="all, delete-orphan", lazy="selectin"
    )
    # Loaded with the instance wherever it is read (one LEFT JOIN, no extra statement): the
    # guest spec for a start or a migration's destination carries the image.
    image_ref: Mapped[Image | None] = relationship(lazy="joined")


class Port(Base):
    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("network", "ip"), UniqueConstraint("mac"))

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), index=True
    )
    network: Mapped[str] = mapped_column(String(63))
    mac: Mapped[str] = mapped_column(String(17))
    ip: Mapped[str] = mapped_column(String(45))

    instance: Mapped[Instance] = relationship(back_populates="ports")


class Allocation(Base):
    """Resources an instance holds on a host; during a migration it holds one on both ends."""

    __tablename__ = "allocations"
    __table_args__ = (UniqueConstraint("instance_id", "host_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"), index=True)
    migration_id: Mapped[str | None] = mapped_column(ForeignKey("migrations.id"), index=True)
    vcpus: Mapped[int]
    ram_mb: Mapped[int]
    disk_gb: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Drain(Base):
    """One maintenance operation on one host."""

    __tablename__ = "drains"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"), index=True)
    reason: Mapped[str] = mapped_column(String(255))
    actor: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=DrainState.RUNNING.value, index=True)
    policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    plan: Mapped[list[Any]] = mapped_column(default=list)
    instances_total: Mapped[int] = mapped_column(default=0)
    instances_moved: Mapped[int] = mapped_column(default=0)
    instances_failed: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class Migration(Base):
    __tablename__ = "migrations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    source_host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"), index=True)
    dest_host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id"), index=True)
    drain_id: Mapped[str | None] = mapped_column(ForeignKey("drains.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8), default=MigrationKind.LIVE.value)
    state: Mapped[str] = mapped_column(String(16), default=MigrationState.QUEUED.value, index=True)
    attempt: Mapped[int] = mapped_column(default=1)
    actor: Mapped[str] = mapped_column(String(64), default="")
    policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dest_port: Mapped[int | None]
    downtime_limit_ms: Mapped[int | None]
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    progress_at: Mapped[datetime | None]
    stalled_since: Mapped[datetime | None]
    escalated_at_pass: Mapped[int] = mapped_column(default=0)
    bytes_total: Mapped[int | None] = mapped_column(BigInteger)
    bytes_sent: Mapped[int | None] = mapped_column(BigInteger)
    bytes_remaining: Mapped[int | None] = mapped_column(BigInteger)
    dirty_rate: Mapped[int | None] = mapped_column(BigInteger)
    passes: Mapped[int | None]
    throughput_mbps: Mapped[float | None]
    expected_downtime_ms: Mapped[int | None]
    downtime_ms: Mapped[int | None]
    total_time_ms: Mapped[int | None]  # QEMU's, start of the stream to the end of switchover
    # A local disk copied with the guest: its allocated bytes to copy, copied, the copy's
    # Mbit/s, and whether it is in sync (then the RAM follows).
    disk_bytes_total: Mapped[int | None] = mapped_column(BigInteger)
    disk_bytes_copied: Mapped[int | None] = mapped_column(BigInteger)
    disk_throughput_mbps: Mapped[float | None]
    disk_ready: Mapped[bool] = mapped_column(default=False, server_default=false())
    error: Mapped[str | None] = mapped_column(Text)
    # "source" or "destination": that end still holds a copy the reconciler keeps removing
    # (finish_source after a completed move, abort after an unwind) until its agent answers.
    leftover: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Event(Base):
    """Audit log and notification source: every state change and operator action."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_host_id", "host", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(63))
    instance_id: Mapped[str | None] = mapped_column(String(36))
    migration_id: Mapped[str | None] = mapped_column(String(36))
    drain_id: Mapped[str | None] = mapped_column(String(36))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class WebhookSubscription(Base):
    """A URL that receives maintenance, drain and migration events as signed CloudEvents.
    `cursor` is the id of the last event handled (delivered, or dropped after its last
    attempt); `attempts` counts failed tries at the next one. The secret signs deliveries, so it
    is stored as given; the API shows it only in the response that creates it."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(256))
    kinds: Mapped[list[Any]] = mapped_column(default=list)
    enabled: Mapped[bool] = mapped_column(default=True)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(default=0)
    delivered: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(default=0)
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    last_delivery_at: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token; only the SHA-256 of its secret is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(64))
