"""A running migration's progress is read at most once per `poll_s`, however often the loop is
woken (regression: with many migrations in flight, every commit made the loop poll them all)."""

from __future__ import annotations

import time
from typing import cast

from ferry.controller.agents import AgentClient
from ferry.db.models import Host, Instance, Migration
from ferry.orchestrator.migrations import Job, MigrationReconciler
from ferry.services.store import Store


def _job(ident: str) -> Job:
    migration = Migration(id=ident, state="running")
    return Job(migration, Instance(id="i"), Host(id=1), Host(id=2))


def test_progress_is_due_once_per_poll_interval() -> None:
    reconciler = MigrationReconciler(cast(Store, None), AgentClient(None), poll_s=0.05)
    one, other = _job("m1"), _job("m2")
    assert reconciler._due(one) and reconciler._due(other)
    assert not reconciler._due(one) and not reconciler._due(other)
    time.sleep(0.06)
    assert reconciler._due(one)


def test_without_an_interval_every_pass_reads_progress() -> None:
    reconciler = MigrationReconciler(cast(Store, None), AgentClient(None))
    job = _job("m1")
    assert all(reconciler._due(job) for _ in range(3))
