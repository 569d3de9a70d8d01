"""live migration of local disks: a migration records its disk copy's progress beside its RAM's
(bytes to copy, copied, the copy's throughput, and whether it is in sync)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 19:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("disk_bytes_total", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("disk_bytes_copied", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("disk_throughput_mbps", sa.Double(), nullable=True))
        batch_op.add_column(
            sa.Column("disk_ready", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.drop_column("disk_ready")
        batch_op.drop_column("disk_throughput_mbps")
        batch_op.drop_column("disk_bytes_copied")
        batch_op.drop_column("disk_bytes_total")
