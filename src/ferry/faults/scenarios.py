"""Fault scenarios: which fault, at which point of a drain, on which cluster, all derived from one
seed so that any run can be replayed exactly (`ferry faults run --runs 1 --seed SEED`).

A run's seed picks its fault kind by rotation over the kinds asked for (`seed % len(kinds)`),
so any `len(kinds)` consecutive seeds cover every kind; everything else (the phase, the
instances, the limits, how long a killed process or a cut link stays down, which migration is
hit) comes from a random generator seeded with it.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    CONTROLLER_KILL = "controller-kill"  # SIGKILL the controller, then start it again
    SOURCE_AGENT_KILL = "source-agent-kill"  # SIGKILL the drained host's agent, then restart
    DEST_AGENT_KILL = "dest-agent-kill"  # SIGKILL a destination's agent, then restart
    SOURCE_GUEST_KILL = "source-guest-kill"  # the migrating guest's QEMU dies on the source
    DEST_GUEST_KILL = "dest-guest-kill"  # ... on the destination (the incoming one, or after)
    LINK_CUT = "link-cut"  # the drained host's migration link goes down, then up again


class Phase(StrEnum):
    FANOUT = "fan-out"  # right after entering maintenance: migrations being queued, scheduled
    PREPARE = "prepare"  # a migration's destination is prepared, its stream not started yet
    TRANSFER = "transfer"  # a migration streams (running)
    SWITCHOVER = "switchover"  # a stream completed at the source; the move is being finished


ALL_KINDS: tuple[FaultKind, ...] = tuple(FaultKind)
# Before any migration has a destination there is no destination guest to kill.
PHASES: dict[FaultKind, tuple[Phase, ...]] = {
    kind: tuple(p for p in Phase if not (kind is FaultKind.DEST_GUEST_KILL and p is Phase.FANOUT))
    for kind in FaultKind
}


@dataclass(frozen=True)
class Scenario:
    seed: int
    kind: FaultKind
    phase: Phase
    instances: int  # on each drained host
    drains: int  # hosts drained at once (the fault hits the first one's migrations)
    max_outbound: int  # the drains' streams per source
    bandwidth_mib: int  # the migrations' bandwidth cap (128 MiB guests)
    down_s: float  # how long a killed process stays down, or the link stays cut
    pick: int  # which migration reaching the phase is hit (0: the first one)
    delay_s: float  # at fan-out: after entering maintenance, before the fault

    @property
    def hosts(self) -> int:
        """Drained hosts plus two to receive their instances."""
        return self.drains + 2

    def describe(self) -> str:
        return f"{self.kind} at {self.phase}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def scenario(seed: int, kinds: tuple[FaultKind, ...] = ALL_KINDS) -> Scenario:
    if not kinds:
        raise ValueError("no fault kinds to choose from")
    rng = random.Random(seed)
    kind = kinds[seed % len(kinds)]
    return Scenario(
        seed=seed,
        kind=kind,
        phase=rng.choice(PHASES[kind]),
        instances=rng.randint(3, 5),
        drains=rng.choice((1, 1, 2)),
        max_outbound=rng.choice((1, 2)),
        bandwidth_mib=rng.choice((64, 128, 256)),
        down_s=round(rng.uniform(0.3, 5.0), 2),
        pick=rng.choice((0, 0, 1)),
        delay_s=round(rng.uniform(0.0, 0.3), 2),
    )


def scenarios(
    first_seed: int, runs: int, kinds: tuple[FaultKind, ...] = ALL_KINDS
) -> list[Scenario]:
    """`runs` scenarios with consecutive seeds from `first_seed`."""
    return [scenario(first_seed + n, kinds) for n in range(runs)]
