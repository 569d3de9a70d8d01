"""The Alembic migrations build exactly the schema the models describe, on SQLite in WAL mode."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, inspect, text

from ferry.db.database import Database, alembic_config
from ferry.db.models import Base


def _differences(metadata: MetaData) -> Any:
    def compare(connection: Connection) -> Any:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, metadata)

    return compare


async def test_migrations_match_the_models(database: Database) -> None:
    async with database.engine.connect() as connection:
        differences = await connection.run_sync(_differences(Base.metadata))
    assert differences == []


async def test_the_comparison_sees_a_difference(database: Database) -> None:
    """Guards the test above: a model the migrations lack is reported."""
    metadata = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    Table("extra", metadata, Column("id", Integer, primary_key=True))
    metadata.tables["hosts"].append_column(Column("rack", String(16)))
    async with database.engine.connect() as connection:
        differences = await connection.run_sync(_differences(metadata))
    kinds = {(diff[0], getattr(diff[-1], "name", None)) for diff in differences}
    assert ("add_table", "extra") in kinds
    assert ("add_column", "rack") in kinds


async def test_database_is_at_head(database: Database) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    async with database.engine.connect() as connection:
        version = (
            await connection.execute(text("SELECT version_num FROM alembic_version"))
        ).scalar()
    assert version == head
    await database.upgrade()  # a second upgrade is a no-op
    async with database.engine.connect() as connection:
        rows = (await connection.execute(text("SELECT version_num FROM alembic_version"))).all()
    assert [row[0] for row in rows] == [head]


async def test_sqlite_runs_in_wal_mode(database: Database) -> None:
    async with database.engine.connect() as connection:
        mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar()
        foreign_keys = (await connection.execute(text("PRAGMA foreign_keys"))).scalar()
    assert mode == "wal"
    assert foreign_keys == 1


async def test_downgrade_to_base_and_up_again(database: Database) -> None:
    def downgrade(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), "base")

    def tables(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    async with database.engine.begin() as connection:
        await connection.run_sync(downgrade)
    async with database.engine.connect() as connection:
        assert await connection.run_sync(tables) == {"alembic_version"}
    await database.upgrade()
    async with database.engine.connect() as connection:
        assert await connection.run_sync(tables) == {"alembic_version", *Base.metadata.tables}
