"""image catalog: images (a file in the state dir each, measured at upload) and the image an
instance's root disk is made from

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 16:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ferry.db.types import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("virtual_size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("image_id", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_instances_image_id"), ["image_id"], unique=False)
        batch_op.create_foreign_key(
            "fk_instances_image_id_images", "images", ["image_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_constraint("fk_instances_image_id_images", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_instances_image_id"))
        batch_op.drop_column("image_id")
    op.drop_table("images")
