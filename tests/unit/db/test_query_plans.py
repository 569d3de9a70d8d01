"""Lookups that run per instance create, per heartbeat or per reconcile pass use an index, not a
scan of their table: at 20,000 instances (`ferry bench scale`) each scan made seeding slower
with every instance created. Checked on the schema the migrations build, with the statements
SQLAlchemy sends (SQLite's EXPLAIN QUERY PLAN)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Select, select, text
from sqlalchemy.dialects import sqlite

from ferry.db.database import Database
from ferry.db.models import Allocation, Image, Instance, Port

LOOKUPS: dict[str, Select[Any]] = {
    "an instance's ports (loaded with every instance)": select(Port.id).where(
        Port.instance_id.in_(["a", "b"])
    ),
    "instances the instance loop acts on": select(Port.id)
    .join(Instance, Instance.id == Port.instance_id)
    .where(Instance.state.in_(["building", "deleting"])),
    "a migration's claims": select(Allocation.id).where(Allocation.migration_id == "m"),
    "a host's instances (each heartbeat)": select(Port.id)
    .join(Instance, Instance.id == Port.instance_id)
    .where(Instance.host_id == 1),
    "the instances of an image (each image delete)": select(Instance.name).where(
        Instance.image_id == "i", Instance.state != "deleted"
    ),
    "an instance with its image (every instance read)": select(Image.name)
    .select_from(Instance)
    .outerjoin(Image, Instance.image_id == Image.id)
    .where(Instance.id == "x"),
}


async def _plan(db: Database, query: Select[Any]) -> str:
    compiled = query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
    async with db.engine.connect() as connection:
        rows = await connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))
        return "\n".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize("lookup", list(LOOKUPS))
async def test_lookup_uses_an_index(database: Database, lookup: str) -> None:
    plan = await _plan(database, LOOKUPS[lookup])
    assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
    first = plan.splitlines()[0]
    assert not first.startswith("SCAN"), plan
