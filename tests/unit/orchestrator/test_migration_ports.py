"""Migration ports: never one that the host's own outgoing connections may hold, never one that
another migration into the same host holds (regression: a drain's migration failed with "QMP
migrate-incoming failed: Failed to find an available port: Address already in use": ports were
drawn from 49152-59151, inside Linux's ephemeral range, by a hash of the migration id)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.db.models import Host, Instance, Migration
from ferry.orchestrator.migration.jobs import Job, ports_for
from ferry.orchestrator.migration.ports import MIGRATION_PORTS, assign_ports

FIRST = MIGRATION_PORTS[0]


def test_ports_lie_above_the_ephemeral_range_of_this_machine() -> None:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert high < MIGRATION_PORTS[0] or MIGRATION_PORTS[-1] < low
    assert len(MIGRATION_PORTS) >= 1000 and MIGRATION_PORTS[-1] <= 65535


def test_each_migration_gets_the_lowest_port_free_on_its_destination() -> None:
    held = [(2, FIRST), (2, FIRST + 2), (3, FIRST + 1)]
    wanted = [("m-b", 2), ("m-a", 2), ("m-c", 3), ("m-d", 4)]
    assert assign_ports(wanted, held) == {
        "m-a": FIRST + 1,  # ids in order: m-a before m-b
        "m-b": FIRST + 3,
        "m-c": FIRST,
        "m-d": FIRST,
    }


def test_a_host_with_every_port_held_gives_none_until_one_frees() -> None:
    held = [(2, port) for port in MIGRATION_PORTS]
    assert assign_ports([("m1", 2), ("m2", 3)], held) == {"m2": FIRST}


def _job(ident: str, state: str, dest: int, port: int | None, leftover: str | None = None) -> Job:
    migration = Migration(id=ident, state=state, dest_port=port, leftover=leftover)
    return Job(migration, Instance(id=f"i-{ident}"), Host(id=1), Host(id=dest))


@pytest.mark.parametrize("state", ["scheduled", "preparing", "running", "postcopy", "switching"])
def test_a_port_is_held_from_its_recording_until_the_migration_ends(state: str) -> None:
    jobs = [_job("a", state, 2, FIRST), _job("b", "scheduled", 2, None)]
    assert ports_for(jobs) == {"b": FIRST + 1}


def test_ended_migrations_free_their_port_unless_a_destination_copy_remains() -> None:
    jobs = [
        _job("a", "failed", 2, FIRST, leftover="destination"),
        _job("b", "completed", 2, FIRST + 1, leftover="source"),
        _job("c", "scheduled", 2, None),
        _job("d", "scheduled", 2, None),
    ]
    assert ports_for(jobs) == {"c": FIRST + 1, "d": FIRST + 2}


def test_a_migration_that_has_its_port_keeps_it() -> None:
    """A retried preparation asks the agent for the port it may be listening on already."""
    jobs = [_job("a", "scheduled", 2, FIRST + 7), _job("b", "scheduled", 2, None)]
    assert ports_for(jobs) == {"b": FIRST}
