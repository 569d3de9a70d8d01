"""instance storage and DHCP: hosts report their storage (local, or a shared pool, with its size
and free space); an instance records the pool its disk is in and its disk-writing workload;
networks get an allocation range, so that addresses outside it (DHCP servers) are never handed
to instances

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 16:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("storage_kind", sa.String(length=8), nullable=False, server_default="local")
        )
        batch_op.add_column(
            sa.Column("storage_pool", sa.String(length=63), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("storage_free_gb", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("storage_pool", sa.String(length=63), nullable=True))
        batch_op.add_column(
            sa.Column("disk_write_kibps", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("networks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("allocation_start", sa.String(length=45), nullable=True))
        batch_op.add_column(sa.Column("allocation_end", sa.String(length=45), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("networks", schema=None) as batch_op:
        batch_op.drop_column("allocation_end")
        batch_op.drop_column("allocation_start")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("disk_write_kibps")
        batch_op.drop_column("storage_pool")
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_column("storage_free_gb")
        batch_op.drop_column("storage_pool")
        batch_op.drop_column("storage_kind")
