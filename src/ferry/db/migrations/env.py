"""Alembic environment: always run online, on the connection the caller passes in."""

from __future__ import annotations

from alembic import context

from ferry.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("ferry runs migrations through Database.upgrade(), with a connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
