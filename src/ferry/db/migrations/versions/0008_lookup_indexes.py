"""indexes for lookups that scanned whole tables

An instance's ports (loaded with every instance), instances by state (the instance loop's
building and deleting ones) and a migration's claims were found by scanning their tables: with
20,000 instances every instance create and every reconcile pass paid for all of them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 09:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_ports_instance_id", "ports", "instance_id"),
    ("ix_instances_state", "instances", "state"),
    ("ix_allocations_migration_id", "allocations", "migration_id"),
)


def upgrade() -> None:
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _column in INDEXES:
        op.drop_index(name, table_name=table)
