"""flavors networks and instance details

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 14:47:32.988214
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ferry.db.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flavors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("ram_mb", sa.Integer(), nullable=False),
        sa.Column("disk_gb", sa.Integer(), nullable=False),
        sa.Column("created_at", ferry.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "networks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("cidr", sa.String(length=64), nullable=False),
        sa.Column("gateway", sa.String(length=45), nullable=True),
        sa.Column("created_at", ferry.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_url", sa.String(length=128), nullable=True))

    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("flavor", sa.String(length=63), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("dirty_rate_mbps", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("created_by", sa.String(length=64), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("created_by")
        batch_op.drop_column("error")
        batch_op.drop_column("dirty_rate_mbps")
        batch_op.drop_column("flavor")

    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_column("agent_url")

    op.drop_table("networks")
    op.drop_table("flavors")
