"""The port a destination listens on for a migration stream.

Ports come from MIGRATION_PORTS, above Linux's default ephemeral range (32768-60999): a port
inside that range can be held at any moment by one of the host's own outgoing connections (an
agent's call to the controller, a connection in TIME_WAIT), and QEMU's `migrate-incoming` then
fails with "Address already in use". Within the range each migration gets the lowest port that
no other migration into the same host may still hold, so two streams into one host never
collide, however many are prepared at once. A migration that copies a local disk also has the
destination's NBD export listen, on its port + DISK_PORT_OFFSET (62000-62999): as unique.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

MIGRATION_PORTS = range(61000, 62000)
DISK_PORT_OFFSET = 1000


def disk_port(migration_port: int) -> int:
    """The destination's NBD port beside its migration port."""
    return migration_port + DISK_PORT_OFFSET


def assign_ports(
    wanted: Iterable[tuple[str, int]], held: Iterable[tuple[int, int]]
) -> dict[str, int]:
    """A port for each `(migration id, destination host id)` of `wanted`, given the
    `(destination host id, port)` pairs `held` by migrations that may still listen or stream
    there. Ids are served in order, so a pass decides the same way every time; one that finds
    every port of its host held gets none (it waits for a later pass)."""
    taken: dict[int, set[int]] = defaultdict(set)
    for host, port in held:
        taken[host].add(port)
    ports: dict[str, int] = {}
    for migration, host in sorted(wanted):
        free = next((p for p in MIGRATION_PORTS if p not in taken[host]), None)
        if free is not None:
            taken[host].add(free)
            ports[migration] = free
    return ports
