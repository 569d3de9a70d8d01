"""A count of the SQL statements one process sent to its database, always on.

The counter listens to the engine's `before_cursor_execute` event: one count per DBAPI
`execute` or `executemany` (a bulk insert of many rows counts once), by the statement's leading
verb. It costs one small Python call per statement and never touches the database. The
controller serves the figures at `GET /v1/metrics`, so a benchmark can put statements per unit
of work (a migration, a request) next to its other figures.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import Engine, event

VERBS = ("SELECT", "INSERT", "UPDATE", "DELETE")
OTHER = "OTHER"


def verb_of(statement: str) -> str:
    """SELECT, INSERT, UPDATE, DELETE, or OTHER (PRAGMA, BEGIN, DDL, ...)."""
    head = statement[:16].lstrip().split(None, 1)
    word = head[0].upper() if head else ""
    return word if word in VERBS else OTHER


class StatementCounter:
    def __init__(self) -> None:
        self.total = 0
        self.by_verb: Counter[str] = Counter()

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        self.total += 1
        self.by_verb[verb_of(statement)] += 1

    def snapshot(self) -> dict[str, int]:
        """Every verb, zero included, so readers can subtract two snapshots field by field."""
        return {verb: self.by_verb[verb] for verb in (*VERBS, OTHER)}
