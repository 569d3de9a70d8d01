"""A running guest moves only to a host with its pinned CPU model, machine type and accelerator
and a QEMU at least as new as its source's (QEMU migrates forwards, not backwards; a KVM guest's
CPU state does not load under TCG, nor the reverse). New instances carry no traits and pass."""

from __future__ import annotations

import re
from functools import lru_cache

from ferry.scheduler.model import Candidate, Request


@lru_cache(maxsize=256)  # a cluster has a handful of QEMU versions; filters run per host
def version_key(version: str) -> tuple[int, ...]:
    """'8.2.2' -> (8, 2, 2); 'QEMU emulator version 9.0.0 (Debian 1:9.0+ds)' -> (9, 0, 0)."""
    found = re.search(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in found.group().split(".")) if found else ()


class Compatibility:
    name = "compatibility"
    reason = "CPU model, machine type, accelerator or QEMU version incompatible"
    static = True

    def passes(self, host: Candidate, request: Request) -> bool:
        want, have = request.traits, host.traits
        if want is None:
            return True
        if have is None:
            return False
        return (
            have.cpu_model == want.cpu_model
            and have.machine_type == want.machine_type
            and have.accelerator == want.accelerator
            and version_key(have.qemu_version) >= version_key(want.qemu_version)
        )


FILTER = Compatibility()
