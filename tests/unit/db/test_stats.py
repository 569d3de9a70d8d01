"""The SQL statement counter: one count per statement the engine sends, by leading verb."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from ferry.db.stats import StatementCounter, verb_of


@pytest.mark.parametrize(
    ("statement", "verb"),
    [
        ("SELECT hosts.id FROM hosts", "SELECT"),
        ("  select 1", "SELECT"),
        ("INSERT INTO events (kind) VALUES (?)", "INSERT"),
        ("UPDATE hosts SET version=?", "UPDATE"),
        ("DELETE FROM ports WHERE id = ?", "DELETE"),
        ("PRAGMA foreign_keys=ON", "OTHER"),
        ("", "OTHER"),
    ],
)
def test_verb_of(statement: str, verb: str) -> None:
    assert verb_of(statement) == verb


def test_counts_every_statement_by_verb() -> None:
    engine = create_engine("sqlite://")
    counter = StatementCounter()
    counter.attach(engine)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        connection.execute(text("INSERT INTO t VALUES (:x)"), [{"x": 1}, {"x": 2}])
        connection.execute(text("SELECT x FROM t")).all()
        connection.execute(text("UPDATE t SET x = 3"))
    assert counter.total == 4  # the two-row insert is one executemany
    assert counter.snapshot() == {"SELECT": 1, "INSERT": 1, "UPDATE": 1, "DELETE": 0, "OTHER": 1}
