"""Host weighers, one per module, each with a default multiplier that configuration overrides
(0 turns one off)."""

from __future__ import annotations

from ferry.scheduler.framework import HostWeigher
from ferry.scheduler.weighers import (
    free_ram,
    free_vcpu,
    inbound_migrations,
    soft_affinity,
    soft_anti_affinity,
)

ALL: dict[str, HostWeigher] = {
    w.name: w
    for w in (
        free_ram.WEIGHER,
        free_vcpu.WEIGHER,
        inbound_migrations.WEIGHER,
        soft_affinity.WEIGHER,
        soft_anti_affinity.WEIGHER,
    )
}
