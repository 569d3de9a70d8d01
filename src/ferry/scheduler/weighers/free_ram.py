"""Free RAM as a share of the host's capacity: a positive multiplier spreads guests so hosts of
any size fill evenly, a negative one stacks them. (Nova weighs absolute free MiB, which fills
big hosts first; a share keeps utilization level across mixed hardware.)"""

from __future__ import annotations

from ferry.scheduler.model import Candidate, Request


class FreeRam:
    name = "free_ram"
    default_multiplier = 1.0

    def raw(self, host: Candidate, request: Request) -> float:
        free = host.capacity.ram_mb - host.used.ram_mb
        return free / host.capacity.ram_mb if host.capacity.ram_mb > 0 else 0.0


WEIGHER = FreeRam()
