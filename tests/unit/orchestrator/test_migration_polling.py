"""A running migration's progress is read at most once per `poll_s`, however often the loop is
woken (regression: with many migrations in flight, every commit made the loop poll them all)."""

from __future__ import annotations

import time
from typing import cast

from ferry.agent_client import AgentClient
from ferry.db.models import Host, Instance, Migration
from ferry.orchestrator.migration.jobs import Job
from ferry.orchestrator.migration.reconciler import MigrationReconciler
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


def _between(ident: str, instance: str, source: str, dest: str) -> Job:
    migration = Migration(id=ident, state="running")
    return Job(migration, Instance(id=instance), Host(id=1, name=source), Host(id=2, name=dest))


def test_an_event_makes_the_progress_due_at_once() -> None:
    """An agent's migration event (QEMU's MIGRATION or MIGRATION_PASS) is read at the next
    pass, however recently the poll read it; then the poll interval applies again."""
    reconciler = MigrationReconciler(cast(Store, None), AgentClient(None), poll_s=60)
    job, other = _between("m1", "i1", "host1", "host2"), _between("m2", "i2", "host3", "host2")
    reconciler.track([job, other])
    assert reconciler._due(job) and reconciler._due(other)
    assert not reconciler._due(job)
    assert reconciler.hint("host1", ["i1"]) == 1  # from the source
    assert reconciler._due(job) and not reconciler._due(other)
    assert not reconciler._due(job)  # one reading per event
    assert reconciler.hint("host2", ["i1", "i2"]) == 2  # from the destination of both
    assert reconciler._due(job) and reconciler._due(other)
    counts = reconciler.events
    assert (counts.received, counts.accepted, counts.readings) == (3, 3, 3)


def test_events_of_other_hosts_or_guests_are_not_taken() -> None:
    reconciler = MigrationReconciler(cast(Store, None), AgentClient(None), poll_s=60)
    job = _between("m1", "i1", "host1", "host2")
    reconciler.track([job])
    assert reconciler._due(job)
    assert reconciler.hint("host3", ["i1"]) == 0  # not an end of that migration
    assert reconciler.hint("host1", ["i9"]) == 0  # no migration in flight
    assert not reconciler._due(job)
    reconciler.hint("host1", ["i1"])
    reconciler.track([])  # the migration ended before its pass: the hint goes with it
    reconciler.track([job])
    assert not reconciler._due(job)
    assert (reconciler.events.received, reconciler.events.accepted) == (3, 1)
