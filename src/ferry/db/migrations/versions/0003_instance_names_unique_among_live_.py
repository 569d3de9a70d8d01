"""instance names unique among live instances

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 15:26:11.093183
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


LIVE = sa.text("state != 'deleted'")
# 0001 created the name constraint unnamed: SQLite reflects it without a name (batch mode names it
# by this convention), PostgreSQL calls it instances_name_key.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("instances", naming_convention=NAMING) as batch_op:
            batch_op.drop_constraint("uq_instances_name", type_="unique")
    else:
        op.drop_constraint("instances_name_key", "instances", type_="unique")
    op.create_index(
        "uq_instances_live_name",
        "instances",
        ["name"],
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )


def downgrade() -> None:
    op.drop_index("uq_instances_live_name", "instances")
    with op.batch_alter_table("instances") as batch_op:
        batch_op.create_unique_constraint("instances_name_key", ["name"])
