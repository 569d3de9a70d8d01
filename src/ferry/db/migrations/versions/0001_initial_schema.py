"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24 14:19:24.693631
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ferry.db.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", ferry.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("last_used_at", ferry.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", ferry.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("secret_sha256"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", ferry.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=63), nullable=True),
        sa.Column("instance_id", sa.String(length=36), nullable=True),
        sa.Column("migration_id", sa.String(length=36), nullable=True),
        sa.Column("drain_id", sa.String(length=36), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_host_id", ["host", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_kind"), ["kind"], unique=False)

    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("management_address", sa.String(length=64), nullable=False),
        sa.Column("migration_address", sa.String(length=64), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("ram_mb", sa.Integer(), nullable=False),
        sa.Column("disk_gb", sa.Integer(), nullable=False),
        sa.Column("cpu_allocation_ratio", sa.Double(), nullable=False),
        sa.Column("ram_allocation_ratio", sa.Double(), nullable=False),
        sa.Column("disk_allocation_ratio", sa.Double(), nullable=False),
        sa.Column("reserved_vcpus", sa.Integer(), nullable=False),
        sa.Column("reserved_ram_mb", sa.Integer(), nullable=False),
        sa.Column("reserved_disk_gb", sa.Integer(), nullable=False),
        sa.Column("cpu_model", sa.String(length=64), nullable=False),
        sa.Column("qemu_version", sa.String(length=32), nullable=False),
        sa.Column("machine_type", sa.String(length=64), nullable=False),
        sa.Column("networks", sa.JSON(), nullable=False),
        sa.Column("agent_version", sa.String(length=32), nullable=False),
        sa.Column("registered_at", ferry.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_heartbeat_at", ferry.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("liveness_seen", sa.String(length=8), nullable=False),
        sa.Column("admin_state", sa.String(length=16), nullable=False),
        sa.Column("admin_reason", sa.String(length=255), nullable=True),
        sa.Column("admin_actor", sa.String(length=64), nullable=True),
        sa.Column("admin_changed_at", ferry.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("maintenance_state", sa.String(length=16), nullable=False),
        sa.Column("maintenance_reason", sa.String(length=255), nullable=True),
        sa.Column("maintenance_actor", sa.String(length=64), nullable=True),
        sa.Column("maintenance_since", ferry.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "maintenance_changed_at", ferry.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hosts_maintenance_state"), ["maintenance_state"], unique=False
        )

    op.create_table(
        "drains",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("instances_total", sa.Integer(), nullable=False),
        sa.Column("instances_moved", sa.Integer(), nullable=False),
        sa.Column("instances_failed", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", ferry.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", ferry.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["host_id"],
            ["hosts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("drains", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_drains_host_id"), ["host_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_drains_state"), ["state"], unique=False)

    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("ram_mb", sa.Integer(), nullable=False),
        sa.Column("disk_gb", sa.Integer(), nullable=False),
        sa.Column("image", sa.String(length=128), nullable=False),
        sa.Column("server_group", sa.String(length=63), nullable=True),
        sa.Column("host_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", ferry.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ferry.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"],
            ["hosts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instances_host_id"), ["host_id"], unique=False)

    op.create_table(
        "migrations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("source_host_id", sa.Integer(), nullable=False),
        sa.Column("dest_host_id", sa.Integer(), nullable=True),
        sa.Column("drain_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=True),
        sa.Column("bytes_sent", sa.BigInteger(), nullable=True),
        sa.Column("bytes_remaining", sa.BigInteger(), nullable=True),
        sa.Column("dirty_rate", sa.BigInteger(), nullable=True),
        sa.Column("passes", sa.Integer(), nullable=True),
        sa.Column("throughput_mbps", sa.Double(), nullable=True),
        sa.Column("expected_downtime_ms", sa.Integer(), nullable=True),
        sa.Column("downtime_ms", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", ferry.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", ferry.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", ferry.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dest_host_id"],
            ["hosts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["drain_id"],
            ["drains.id"],
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
        ),
        sa.ForeignKeyConstraint(
            ["source_host_id"],
            ["hosts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_migrations_dest_host_id"), ["dest_host_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_migrations_drain_id"), ["drain_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_migrations_instance_id"), ["instance_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_migrations_source_host_id"), ["source_host_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_migrations_state"), ["state"], unique=False)

    op.create_table(
        "ports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("network", sa.String(length=63), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mac"),
        sa.UniqueConstraint("network", "ip"),
    )
    op.create_table(
        "allocations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("migration_id", sa.String(length=36), nullable=True),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("ram_mb", sa.Integer(), nullable=False),
        sa.Column("disk_gb", sa.Integer(), nullable=False),
        sa.Column("created_at", ferry.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"],
            ["hosts.id"],
        ),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["migration_id"],
            ["migrations.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("instance_id", "host_id"),
    )
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_allocations_host_id"), ["host_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_allocations_host_id"))

    op.drop_table("allocations")
    op.drop_table("ports")
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_migrations_state"))
        batch_op.drop_index(batch_op.f("ix_migrations_source_host_id"))
        batch_op.drop_index(batch_op.f("ix_migrations_instance_id"))
        batch_op.drop_index(batch_op.f("ix_migrations_drain_id"))
        batch_op.drop_index(batch_op.f("ix_migrations_dest_host_id"))

    op.drop_table("migrations")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instances_host_id"))

    op.drop_table("instances")
    with op.batch_alter_table("drains", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_drains_state"))
        batch_op.drop_index(batch_op.f("ix_drains_host_id"))

    op.drop_table("drains")
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hosts_maintenance_state"))

    op.drop_table("hosts")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_kind"))
        batch_op.drop_index("ix_events_host_id")

    op.drop_table("events")
    op.drop_table("api_tokens")
