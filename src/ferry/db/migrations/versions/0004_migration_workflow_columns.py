"""migration workflow columns

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 15:30:01.828172
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ferry.db.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("actor", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("policy", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("dest_port", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("downtime_limit_ms", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("progress_at", ferry.db.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("stalled_since", ferry.db.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("escalated_at_pass", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.drop_column("escalated_at_pass")
        batch_op.drop_column("stalled_since")
        batch_op.drop_column("progress_at")
        batch_op.drop_column("cancel_requested")
        batch_op.drop_column("downtime_limit_ms")
        batch_op.drop_column("dest_port")
        batch_op.drop_column("policy")
        batch_op.drop_column("actor")
