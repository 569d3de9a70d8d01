"""A fresh SQLite database at the newest schema, for the database tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ferry.db.database import Database


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'ferry.db'}")
    await db.upgrade()
    try:
        yield db
    finally:
        await db.dispose()
