"""Host filters, one per module. The first four always run (a host that is down, disabled or
in maintenance never receives anything, and an instance never moves where its disk is not);
the rest are enabled and ordered by configuration."""

from __future__ import annotations

from ferry.scheduler.filters import (
    affinity,
    anti_affinity,
    compatibility,
    disk,
    enabled,
    host_up,
    in_service,
    network,
    ram,
    storage,
    vcpu,
)
from ferry.scheduler.framework import HostFilter

MANDATORY: tuple[HostFilter, ...] = (
    host_up.FILTER,
    enabled.FILTER,
    in_service.FILTER,
    storage.FILTER,
)

OPTIONAL: dict[str, HostFilter] = {
    f.name: f
    for f in (
        network.FILTER,
        compatibility.FILTER,
        ram.FILTER,
        vcpu.FILTER,
        disk.FILTER,
        affinity.FILTER,
        anti_affinity.FILTER,
    )
}

DEFAULT: tuple[str, ...] = tuple(OPTIONAL)
